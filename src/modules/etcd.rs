//! What the `etcd_*` modules share: etcdctl with the client's TLS files, and the first endpoint
//! of a list that answers (`etcd.sh`, prepended to each module's script).

/// The helpers every `etcd_*` script starts with.
const SH: &str = include_str!("etcd.sh");

/// The script of an `etcd_*` module: the shared helpers, then its own functions.
pub fn script(module_sh: &str, vars: &[(&str, &str)], call: &str) -> String {
    super::script(&format!("{SH}\n{module_sh}"), vars, call)
}
