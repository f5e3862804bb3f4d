//! What the `patroni_*` modules share: the shell helpers that call Patroni's REST API
//! (`patroni.sh`, prepended to each module's script).

/// The helpers every `patroni_*` script starts with.
const SH: &str = include_str!("patroni.sh");

/// The script of a `patroni_*` module: the shared helpers, then its own functions.
pub fn script(module_sh: &str, vars: &[(&str, &str)], call: &str) -> String {
    super::script(&format!("{SH}\n{module_sh}"), vars, call)
}
