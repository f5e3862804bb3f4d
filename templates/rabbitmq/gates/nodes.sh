# shellcheck shell=sh
# Every node of the rabbitmq group runs as a disk node, no partitions, no alarms. A node outside
# the group is one left without --prune (stage rabbitmq's rabbitmq_forget reports it).
# HACTL_NODES: rabbit@NAME for each of the group, sorted, comma-separated.
nodes=$(curl -sf --max-time 5 -K /etc/hactl/rabbitmq-api.curl 'http://127.0.0.1:15672/api/nodes?columns=name,type,running,partitions,mem_alarm,disk_free_alarm') || { echo "the management API did not answer"; exit 1; }
printf '%s' "$nodes" | jq -en --arg want "$HACTL_NODES" 'input | ($want | split(",")) as $group |
  ($group - [.[] | select(.running) | .name]) == []
  and ($group - [.[] | select(.type == "disc") | .name]) == []
  and ([.[] | .partitions[]?] | length) == 0
  and ([.[] | select(.mem_alarm or .disk_free_alarm)] | length) == 0' >/dev/null || { echo "nodes: $nodes"; exit 1; }
