//! Stages base, rabbitmq and mq-lb on three lab nodes: the cluster forms once, a re-run changes
//! nothing and keeps the Erlang VMs, a real AMQP client (pika inside a node) keeps publishing and
//! consuming through the LB on a quorum queue while a node is down, the node rejoins, and a node
//! wiped by hand is rejoined without re-creating what exists.

#[macro_use]
mod common;

use std::time::Instant;

use common::*;

const STAGES: &str = "base,rabbitmq,mq-lb";

const CLIENT: &str = r#"
import sys, time, pika
mode, start, end, password = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
params = pika.ConnectionParameters("127.0.0.1", 5673, "airflow", pika.PlainCredentials("airflow", password),
                                   connection_attempts=10, retry_delay=1, socket_timeout=5)
def channel():
    ch = pika.BlockingConnection(params).channel()
    ch.queue_declare("hactl-test", durable=True, arguments={"x-queue-type": "quorum"})
    return ch
deadline = time.time() + 90
if mode == "publish":
    i, ch = start, None
    while i < end:
        try:
            ch = ch or channel()
            ch.confirm_delivery()
            ch.basic_publish("", "hactl-test", f"m-{i}".encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
            i += 1
        except Exception as e:
            if time.time() > deadline: raise
            print("retry after", type(e).__name__, file=sys.stderr); ch = None; time.sleep(1)
    print("published", end - start)
else:
    got = set()
    ch = channel()
    while True:
        method, _, body = ch.basic_get("hactl-test")
        if method is None: break
        got.add(body.decode()); ch.basic_ack(method.delivery_tag)
    want = {f"m-{i}" for i in range(start, end)}
    print("consumed", len(got), "missing", len(want - got), "unexpected", len(got - want))
    sys.exit(0 if got == want else 1)
"#;

/// The members of the quorum queue `hactl-test`, sorted, as node `from` lists them.
fn test_queue_members(from: usize) -> Vec<String> {
    let out = ssh_ok(
        from,
        "rabbitmqctl -q list_queues -p airflow name members --formatter json",
    );
    let queues: serde_json::Value = serde_json::from_str(&out).expect("list_queues json");
    let queue = queues
        .as_array()
        .expect("a list")
        .iter()
        .find(|q| q["name"] == "hactl-test")
        .unwrap_or_else(|| panic!("no queue hactl-test: {out}"));
    let mut members: Vec<String> = queue["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    members.sort();
    members
}

fn beam_pids() -> Vec<String> {
    (1..=3)
        .map(|n| ssh_ok(n, "systemctl show -p MainPID --value rabbitmq-server"))
        .collect()
}

#[test]
fn rabbitmq_cluster_forms_survives_a_node_and_rejoins() {
    let _lab = lab_lock();
    let (dir, inv_path) = fresh_lab_inventory();
    let inv = inv_path.to_str().unwrap();

    let plan = run(&["plan", inv, "--stages", STAGES]);
    assert_eq!(plan.status.code(), Some(2), "a plan on fresh nodes has changes pending");
    let plan_text = stdout(&plan);
    // Before RabbitMQ runs, a node's plan names the candidates: a running node of the group with
    // the vhost, else the group's first (which starts the cluster).
    for want in [
        "would join rabbit@node2 to the cluster of the first of rabbit@node1, rabbit@node3 that runs with vhost airflow, else of rabbit@node1",
        "would join rabbit@node1 to the cluster of the first of rabbit@node2, rabbit@node3 that runs with vhost airflow, else start the cluster",
    ] {
        assert!(plan_text.contains(want), "the plan says `{want}`: {plan_text}");
    }

    let started = Instant::now();
    let first = provision_ok(inv, Some(STAGES));
    measured!("first provision: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(first["summary"]["failed"], 0);
    let pids = beam_pids();
    let started = Instant::now();
    let second = provision_ok(inv, Some(STAGES));
    measured!("no-op re-run: {:.2} s", started.elapsed().as_secs_f64());
    assert!(
        changed_steps(&second).is_empty(),
        "second run changed {:?}",
        changed_steps(&second)
    );
    assert_eq!(beam_pids(), pids, "the second run restarted an Erlang VM");

    let password = secret(dir.path(), "rabbitmq_airflow_password");
    assert_eq!(
        ssh(
            1,
            "DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends python3-pika >/dev/null"
        )
        .0,
        0
    );
    assert_eq!(ssh(1, &format!("cat > /root/amqp.py <<'PY'\n{CLIENT}\nPY")).0, 0);
    let client = |args: &str| ssh(1, &format!("python3 /root/amqp.py {args} {password}"));
    assert_eq!(client("publish 0 100").0, 0);

    assert!(stdout(&run(&["lab", "stop", "node3"])).contains("stopped"));
    let (rc, out) = client("publish 100 200");
    assert_eq!(rc, 0, "publishing with a node down: {out}");
    let (rc, out) = client("consume 0 200");
    assert_eq!(rc, 0, "messages lost with a node down: {out}");

    let back = Instant::now();
    assert!(run(&["lab", "up", "--nodes", "3"]).status.success());
    assert_eq!(
        run(&["verify", inv, "--stages", "rabbitmq,mq-lb"]).status.code(),
        Some(0),
        "verify after rejoin"
    );
    measured!(
        "rejoin (machine started -> verify passes): {:.1} s",
        back.elapsed().as_secs_f64()
    );
    let after = provision_ok(inv, Some(STAGES));
    assert!(
        changed_steps(&after).is_empty(),
        "after rejoin: {:?}",
        changed_steps(&after)
    );

    // A node wiped by hand is rejoined; nothing that exists is re-created.
    assert_eq!(
        ssh(
            3,
            "systemctl stop rabbitmq-server && rm -rf /var/lib/rabbitmq/mnesia && systemctl start rabbitmq-server"
        )
        .0,
        0
    );
    let started = Instant::now();
    let repaired = provision_ok(inv, Some(STAGES));
    measured!(
        "rejoin of a wiped node (provision): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let changed = changed_steps(&repaired);
    assert!(changed.iter().any(|c| c.starts_with("node3:join")), "{changed:?}");
    assert!(
        changed.iter().all(|c| c.starts_with("node3:")),
        "only node3 changes: {changed:?}"
    );
    assert!(
        !changed
            .iter()
            .any(|c| c.contains("airflow user") || c.contains("vhost")),
        "re-created: {changed:?}"
    );
    assert_eq!(
        run(&["verify", inv, "--stages", "rabbitmq,mq-lb"]).status.code(),
        Some(0)
    );
    assert!(changed_steps(&provision_ok(inv, Some(STAGES))).is_empty());
    assert_eq!(
        test_queue_members(1),
        ["rabbit@node1", "rabbit@node2", "rabbit@node3"],
        "the wiped node has its replica of the quorum queue again"
    );
    assert_eq!(client("publish 200 210").0, 0);
    assert_eq!(client("consume 200 210").0, 0);

    // A fourth node in the inventory joins, and the quorum queue grows to it.
    assert_eq!(client("publish 210 220").0, 0);
    assert!(run(&["lab", "up", "--nodes", "4"]).status.success());
    add_lab_node(&inv_path, 4);
    let plan = stdout(&run(&["plan", inv, "--stages", STAGES]));
    assert!(
        plan.contains("would join rabbit@node4 to the cluster of the first of rabbit@node1, rabbit@node2, rabbit@node3 that runs with vhost airflow, else of rabbit@node1"),
        "{plan}"
    );
    let started = Instant::now();
    let grown = provision_ok(inv, Some(STAGES));
    measured!(
        "a fourth node joins and the quorum queue grows to it (provision): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let changed = changed_steps(&grown);
    assert!(changed.iter().any(|c| c.starts_with("node4:join")), "{changed:?}");
    assert_eq!(
        test_queue_members(4),
        ["rabbit@node1", "rabbit@node2", "rabbit@node3", "rabbit@node4"]
    );
    assert!(changed_steps(&provision_ok(inv, Some(STAGES))).is_empty());
    assert_eq!(
        run(&["verify", inv, "--stages", "rabbitmq,mq-lb"]).status.code(),
        Some(0),
        "verify on the four"
    );
    let (rc, out) = client("consume 210 220");
    assert_eq!(rc, 0, "messages lost while node4 joined: {out}");
}
