//! What the `patroni_*` modules share: the shell helpers that call Patroni's REST API
//! (`patroni.sh`, prepended to each module's script).

/// The helpers every `patroni_*` script starts with.
const SH: &str = include_str!("patroni.sh");

/// The script of a `patroni_*` module: the shared helpers, then its own functions.
pub fn script(module_sh: &str, vars: &[(&str, &str)], call: &str) -> String {
    super::script(&format!("{SH}\n{module_sh}"), vars, call)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A stand-in for a Patroni REST API on loopback: answers every request with 200 and `{}`.
    fn answering_api() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut request = [0u8; 1024];
                let _ = conn.read(&mut request);
                let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}");
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    /// Like [`answering_api`], keeping every request it receives.
    fn recording_api() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut request = [0u8; 4096];
                let n = conn.read(&mut request).unwrap_or(0);
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&request[..n]).to_string());
                let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}");
            }
        });
        (format!("http://127.0.0.1:{port}"), seen)
    }

    /// A loopback port nothing listens on.
    fn silent_api() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    }

    fn run(apis: &str, call: &str) -> std::process::Output {
        run_module("", &[("HACTL_APIS", apis)], call)
    }

    fn run_module(module_sh: &str, vars: &[(&str, &str)], call: &str) -> std::process::Output {
        let script = script(module_sh, vars, call);
        std::process::Command::new("sh").arg("-c").arg(script).output().unwrap()
    }

    #[test]
    fn a_ca_file_is_only_for_https_apis() {
        let live = answering_api();
        let vars = [("HACTL_APIS", live.as_str()), ("HACTL_CACERT", "/nonexistent/ca.crt")];
        let out = run_module("", &vars, "hactl_get patroni");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "{}");
    }

    #[test]
    fn the_pause_probe_names_the_first_api_that_answers_and_its_state() {
        let (silent, live) = (silent_api(), answering_api());
        let apis = format!("{silent}\n{live}");
        let pause_sh = include_str!("patroni_pause.sh");
        let out = run_module(pause_sh, &[("HACTL_APIS", apis.as_str())], "hactl_probe");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("api {live}\nmember {{}}\n")
        );
        let out = run_module(pause_sh, &[("HACTL_APIS", silent.as_str())], "hactl_probe");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "member -\n");
    }

    #[test]
    fn the_first_api_that_answers_is_asked() {
        let (silent, live) = (silent_api(), answering_api());
        let out = run(&format!("{silent}\n{live}"), "hactl_api");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{live}\n"));
        let out = run(&format!("{silent}\n{live}"), "hactl_get patroni");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "{}");
    }

    #[test]
    fn no_answer_is_a_failure_and_status_000() {
        let out = run(&silent_api(), "hactl_api");
        assert!(!out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "");
        let out = run(&silent_api(), "hactl_status primary");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "000\n");
    }

    #[test]
    fn credentials_never_fall_back_to_plain_http() {
        let (live, seen) = recording_api();
        // TLS configured (the first URL is https), its API silent, a plain one answering.
        let tls = silent_api().replace("http://", "https://");
        let apis = format!("{tls}\n{live}");
        let vars = [
            ("HACTL_APIS", apis.as_str()),
            ("HACTL_API_USER", "patroni"),
            ("HACTL_API_PASSWORD", "s3cret"),
        ];
        // The plain one is asked without them (it answers where it needs none: a relaxed
        // cluster turning TLS on in this run).
        let out = run_module("", &vars, "hactl_unsafe PATCH config '{}'");
        assert!(out.status.success(), "{out:?}");
        assert!(!seen.lock().unwrap().is_empty(), "the plain API was asked");
        assert!(
            seen.lock().unwrap().iter().all(|r| !r.contains("Authorization")),
            "{:?}",
            seen.lock().unwrap()
        );
        // Plain HTTP configured: the credentials go there.
        let apis = format!("{live}\n{tls}");
        let vars = [
            ("HACTL_APIS", apis.as_str()),
            ("HACTL_API_USER", "patroni"),
            ("HACTL_API_PASSWORD", "s3cret"),
        ];
        let out = run_module("", &vars, "hactl_unsafe PATCH config '{}'");
        assert!(out.status.success(), "{out:?}");
        assert!(seen.lock().unwrap().iter().any(|r| r.contains("Authorization: Basic")));
    }
}
