//! Templates: minijinja 3 with strict undefined and the Ansible-like filters the playbooks use.

use std::path::PathBuf;

use base64::Engine;
use miette::{miette, Result};
use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use sha2::Digest;

/// Where template files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    /// A `templates/` directory on disk (beside a playbook given with `-p`).
    Dir(PathBuf),
    /// The templates built into hactl (see [`crate::stack`]).
    BuiltIn,
}

impl TemplateSource {
    /// The regular files under `dir` of the stack (e.g. `dags`), as (path relative to `dir`,
    /// content), sorted: built in, or beside the `templates/` directory on disk. An absolute
    /// `dir` is read from disk as it is.
    pub fn tree(&self, dir: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let root = match self {
            _ if std::path::Path::new(dir).is_absolute() => PathBuf::from(dir),
            TemplateSource::BuiltIn => {
                return crate::stack::tree(dir)
                    .ok_or_else(|| miette!("`{dir}` is not a directory built into hactl (built in: dags)"))
            }
            TemplateSource::Dir(templates) => templates.parent().unwrap_or(templates).join(dir),
        };
        let mut out = Vec::new();
        read_tree(&root, &root, &mut out).map_err(|e| miette!("cannot read the directory {}: {e}", root.display()))?;
        out.sort();
        Ok(out)
    }
}

/// Collects the regular files under `dir` (symlinks followed) with paths relative to `root`.
fn read_tree(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            read_tree(root, &path, out)?;
        } else if path.is_file() {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            out.push((rel, std::fs::read(&path)?));
        }
    }
    Ok(())
}

/// Renders templates from templates/ and inline strings from playbooks.
pub struct Renderer {
    env: Environment<'static>,
    source: TemplateSource,
}

impl Renderer {
    /// Where its template files (and the stack's other files) come from.
    pub fn source(&self) -> &TemplateSource {
        &self.source
    }

    /// A renderer loading template files from `source`.
    pub fn new(source: &TemplateSource) -> Self {
        let mut env = Environment::new();
        match source {
            TemplateSource::Dir(dir) => env.set_loader(minijinja::path_loader(dir)),
            TemplateSource::BuiltIn => env.set_loader(|name| Ok(crate::stack::template(name).map(String::from))),
        }
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("default syntax is valid");
        env.set_syntax(syntax);
        env.add_filter("b64encode", b64encode);
        env.add_filter("b64decode", b64decode);
        env.add_filter("to_yaml", to_yaml);
        env.add_filter("to_json", to_json);
        env.add_filter("mandatory", mandatory);
        env.add_filter("hash", hash);
        env.add_filter("quote", shell_quote);
        env.add_filter("sql_literal", sql_literal);
        env.add_filter("sql_identifier", sql_identifier);
        env.add_filter("yaml_string", yaml_string);
        env.add_filter("ini_value", ini_value);
        env.add_filter("urlencode", urlencode);
        env.add_filter("haproxy_word", haproxy_word);
        env.add_filter("hosts_entries", hosts_entries);
        env.add_filter("extract", extract);
        env.add_filter("ip_network", ip_network);
        env.add_function("fail", fail);
        Renderer {
            env,
            source: source.clone(),
        }
    }

    /// Renders the template file `name` (relative to templates/).
    pub fn render_template(&self, name: &str, ctx: &Value) -> Result<String> {
        let tmpl = self.env.get_template(name).map_err(|e| template_error(name, &e))?;
        tmpl.render(ctx).map_err(|e| template_error(name, &e))
    }

    /// Renders an inline template; `origin` names where it comes from in errors.
    pub fn render_str(&self, origin: &str, source: &str, ctx: &Value) -> Result<String> {
        if !source.contains("{{") && !source.contains("{%") {
            return Ok(source.to_string());
        }
        self.env
            .render_named_str(origin, source, ctx)
            .map_err(|e| template_error(origin, &e))
    }

    /// Renders a playbook value: a string that is one whole `{{ expression }}` yielding a list, a
    /// map or a boolean gives that value (as Ansible does: a switch computed from another, like
    /// `firewall: "{{ hactl_security != 'relaxed' }}"`, stays false in a `when`); any other string
    /// renders as text.
    pub fn render_value(&self, origin: &str, source: &str, ctx: &Value) -> Result<serde_json::Value> {
        if let Some(expr) = whole_expression(source) {
            let compiled = self
                .env
                .compile_expression(expr)
                .map_err(|e| template_error(origin, &e))?;
            let mut value = compiled.eval(ctx).map_err(|e| template_error(origin, &e))?;
            if value.kind() == minijinja::value::ValueKind::Iterable {
                // A lazy sequence (e.g. two lists joined with `+`): made a list.
                let items: Vec<Value> = value.try_iter().map_err(|e| template_error(origin, &e))?.collect();
                value = Value::from(items);
            }
            if matches!(
                value.kind(),
                minijinja::value::ValueKind::Seq | minijinja::value::ValueKind::Map | minijinja::value::ValueKind::Bool
            ) {
                return serde_json::to_value(&value).map_err(|e| miette!("{origin}: {e}"));
            }
        }
        self.render_str(origin, source, ctx).map(serde_json::Value::String)
    }

    /// The top-level variables a template refers to (none when it does not parse: rendering it
    /// reports that).
    pub fn referenced_variables(&self, source: &str) -> std::collections::HashSet<String> {
        self.env
            .template_from_str(source)
            .map(|t| t.undeclared_variables(false))
            .unwrap_or_default()
    }

    /// Evaluates a `when` expression.
    pub fn eval_bool(&self, origin: &str, expr: &str, ctx: &Value) -> Result<bool> {
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| template_error(origin, &e))?;
        Ok(compiled.eval(ctx).map_err(|e| template_error(origin, &e))?.is_true())
    }
}

/// One readable error naming the template and line.
fn template_error(origin: &str, e: &Error) -> miette::Report {
    // An expression (a `when`, a check) has no template name of its own: say whose it is.
    let name = e.name().filter(|n| *n != "<expression>").unwrap_or(origin);
    let line = e.line().map(|l| format!(":{l}")).unwrap_or_default();
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    let hint = if e.kind() == ErrorKind::UndefinedError {
        " (a variable is not defined)"
    } else {
        ""
    };
    miette!("template {name}{line}: {}{detail}{hint}", e.kind())
}

/// The expression inside `{{ ... }}` when that is the whole string.
fn whole_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then_some(inner)
}

/// `groups['x'] | hosts_entries(hostvars)`: `[{ip: <ansible_host>, names: [<host>]}, ...]`.
fn hosts_entries(hosts: Vec<String>, hostvars: Value) -> Result<Value, Error> {
    let mut entries = Vec::new();
    for host in hosts {
        let ip = hostvars
            .get_item(&Value::from(host.as_str()))?
            .get_attr("ansible_host")?;
        if ip.is_undefined() {
            return Err(Error::new(
                ErrorKind::UndefinedError,
                format!("hostvars[{host}].ansible_host is not defined"),
            ));
        }
        entries.push(minijinja::context! { ip => ip, names => vec![host] });
    }
    Ok(Value::from(entries))
}

/// `extract` (Ansible's): `key | extract(container, attribute)` is `container[key][attribute]`,
/// e.g. `groups['etcd'] | map('extract', hostvars, 'debian_release')`; an undefined value is an
/// error naming it.
fn extract(key: Value, container: Value, attribute: Option<Value>) -> Result<Value, Error> {
    let mut value = container.get_item(&key)?;
    if let Some(attribute) = &attribute {
        value = value.get_item(attribute)?;
    }
    if value.is_undefined() {
        let path = attribute.map_or(String::new(), |a| format!("[{a}]"));
        return Err(Error::new(
            ErrorKind::UndefinedError,
            format!("extract: [{key}]{path} is not defined"),
        ));
    }
    Ok(value)
}

/// `sql_literal`: a PostgreSQL string literal ('…', quotes doubled; with
/// standard_conforming_strings, PostgreSQL's default, backslashes are plain characters).
fn sql_literal(s: String) -> Result<String, Error> {
    no_nul("sql_literal", &s)?;
    Ok(format!("'{}'", s.replace('\'', "''")))
}

/// `sql_identifier`: a PostgreSQL quoted identifier ("…", double quotes doubled).
fn sql_identifier(s: String) -> Result<String, Error> {
    no_nul("sql_identifier", &s)?;
    Ok(format!("\"{}\"", s.replace('"', "\"\"")))
}

/// `yaml_string`: a YAML double-quoted scalar (JSON's string escaping, which YAML reads as is).
fn yaml_string(s: String) -> Result<String, Error> {
    serde_json::to_string(&s).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("yaml_string: {e}")))
}

/// `urlencode`: a value for one part of a URL (user, password, path segment): everything but
/// letters, digits and `-._~` percent-encoded.
fn urlencode(s: String) -> String {
    crate::quote::url_part(&s)
}

/// `haproxy_word`: a value as one word of an HAProxy configuration line: single-quoted (no
/// escapes, no environment expansion inside); a value holding a single quote or a line break
/// cannot be one.
fn haproxy_word(s: String) -> Result<String, Error> {
    if s.contains(['\'', '\n', '\r', '\0']) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "haproxy_word: a value with a single quote or a line break cannot be an HAProxy word",
        ));
    }
    Ok(format!("'{s}'"))
}

/// `ip_network(prefix)`: the IPv4 network of an address with that prefix length
/// (`"10.0.0.7" | ip_network(24)` is `"10.0.0.0/24"`), to check that addresses share a subnet.
fn ip_network(addr: String, prefix: Value) -> Result<String, Error> {
    let invalid = |what: String| Error::new(ErrorKind::InvalidOperation, what);
    // A number, or its text (an inventory may quote it).
    let prefix: u8 = prefix
        .to_string()
        .parse()
        .map_err(|_| invalid(format!("ip_network: prefix length `{prefix}` is not 0 to 32")))?;
    let ip: std::net::Ipv4Addr = addr
        .parse()
        .map_err(|_| invalid(format!("ip_network: `{addr}` is not an IPv4 address")))?;
    let net = ipnet::Ipv4Net::new(ip, prefix)
        .map_err(|_| invalid(format!("ip_network: prefix length {prefix} is not 0 to 32")))?;
    Ok(net.trunc().to_string())
}

/// `ini_value`: a value for an INI file read by Python's configparser (Airflow's): `%` doubled
/// (interpolation), and no line break (it would end the value).
fn ini_value(s: String) -> Result<String, Error> {
    if s.contains(['\n', '\r']) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "ini_value: a value with a line break cannot be written to an INI file",
        ));
    }
    Ok(s.replace('%', "%%"))
}

fn no_nul(filter: &str, s: &str) -> Result<(), Error> {
    if s.contains('\0') {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{filter}: a NUL byte cannot be quoted"),
        ));
    }
    Ok(())
}

fn b64encode(s: String) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn b64decode(s: String) -> Result<String, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("b64decode: {e}")))?;
    String::from_utf8(bytes).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("b64decode: {e}")))
}

fn to_yaml(v: Value) -> Result<String, Error> {
    serde_saphyr::to_string(&v).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("to_yaml: {e}")))
}

fn to_json(v: Value) -> Result<String, Error> {
    serde_json::to_string(&v).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("to_json: {e}")))
}

/// `fail("why")`: stops the render with that message (a bad value refused before anything runs).
fn fail(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn mandatory(v: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let msg: Option<String> = kwargs.get("msg")?;
    kwargs.assert_all_used()?;
    if v.is_undefined() || v.is_none() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            msg.unwrap_or_else(|| "mandatory variable not set".into()),
        ));
    }
    Ok(v)
}

fn hash(s: String, algorithm: Option<String>) -> Result<String, Error> {
    match algorithm.as_deref().unwrap_or("sha256") {
        "sha256" => Ok(hex::encode(sha2::Sha256::digest(s.as_bytes()))),
        "sha512" => Ok(hex::encode(sha2::Sha512::digest(s.as_bytes()))),
        other => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("hash: unsupported algorithm {other}"),
        )),
    }
}

/// The `quote` filter: one shell word (see [`crate::quote::q`]).
fn shell_quote(s: String) -> Result<String, Error> {
    crate::quote::try_q(&s).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("quote: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn renderer() -> (tempfile::TempDir, Renderer) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.conf.j2"),
            "a={{ a }}\n{% for h in hosts %}{{ h }}\n{% endfor %}",
        )
        .unwrap();
        std::fs::write(dir.path().join("bad.j2"), "line1\nvalue={{ missing }}\n").unwrap();
        let r = Renderer::new(&TemplateSource::Dir(dir.path().to_path_buf()));
        (dir, r)
    }

    #[test]
    fn renders_with_trailing_newline_and_no_escaping() {
        let (_d, r) = renderer();
        let out = r
            .render_template("t.conf.j2", &context! { a => "<x>", hosts => vec!["n1", "n2"] })
            .unwrap();
        assert_eq!(out, "a=<x>\nn1\nn2\n");
    }

    #[test]
    fn undefined_variable_names_template_and_line() {
        let (_d, r) = renderer();
        let err = r.render_template("bad.j2", &context! {}).unwrap_err().to_string();
        assert!(err.contains("bad.j2:2"), "{err}");
        assert!(err.contains("undefined"), "{err}");
    }

    /// What part pg-lb-checks-both does: a template rendered with one more variable, as one
    /// shell word, inside an inline string.
    #[test]
    fn an_inline_string_quotes_an_included_template_with_a_variable_of_its_own() {
        let (_d, r) = renderer();
        let src = "printf '%s' {% filter quote %}{% with a = \"it's\" %}{% include 't.conf.j2' %}{% endwith %}{% endfilter %}";
        let out = r.render_str("x", src, &context! { hosts => vec!["n1"] }).unwrap();
        assert_eq!(out, "printf '%s' \"a=it's\nn1\n\"");
    }

    #[test]
    fn a_whole_expression_keeps_lists_maps_and_booleans() {
        let (_d, r) = renderer();
        let ctx = context! { mode => "relaxed", xs => vec![1, 2] };
        let value = |src: &str| r.render_value("x", src, &ctx).unwrap();
        assert_eq!(value("{{ mode != 'relaxed' }}"), serde_json::json!(false));
        assert_eq!(value("{{ xs + [3] }}"), serde_json::json!([1, 2, 3]));
        assert_eq!(value("{{ {'a': mode} }}"), serde_json::json!({"a": "relaxed"}));
        assert_eq!(value("{{ xs | length }}"), serde_json::json!("2"), "numbers stay text");
        assert!(value("on: {{ mode == 'relaxed' }}").is_string(), "text around it: text");
    }

    #[test]
    fn filters() {
        let (_d, r) = renderer();
        let ctx = context! { s => "hi", m => context! { k => vec![1, 2] } };
        assert_eq!(r.render_str("x", "{{ s | b64encode }}", &ctx).unwrap(), "aGk=");
        assert_eq!(r.render_str("x", "{{ 'aGk=' | b64decode }}", &ctx).unwrap(), "hi");
        assert_eq!(r.render_str("x", "{{ m | to_json }}", &ctx).unwrap(), r#"{"k":[1,2]}"#);
        assert!(r.render_str("x", "{{ m | to_yaml }}", &ctx).unwrap().contains("k:"));
        let quoted = r.render_str("x", "{{ \"it's $x\" | quote }}", &ctx).unwrap();
        let printed = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {quoted}"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&printed.stdout), "it's $x");
        assert!(r.render_str("x", "{{ nope | mandatory }}", &ctx).is_err());
        let refused = r
            .render_str("x", "{% if s %}{{ fail('no ' ~ s) }}{% endif %}", &ctx)
            .unwrap_err();
        assert!(refused.to_string().contains("no hi"), "{refused}");
        let url = context! { p => "p@ss:w/rd%20 ü" };
        assert_eq!(
            r.render_str("x", "{{ p | urlencode }}", &url).unwrap(),
            "p%40ss%3Aw%2Frd%2520%20%C3%BC"
        );
        assert_eq!(
            r.render_str("x", "{{ 'a b$c' | haproxy_word }}", &ctx).unwrap(),
            "'a b$c'"
        );
        assert!(r.render_str("x", "{{ \"it's\" | haproxy_word }}", &ctx).is_err());
        assert_eq!(
            r.render_str("x", "{{ '10.213.0.250' | ip_network(24) }}", &ctx)
                .unwrap(),
            "10.213.0.0/24"
        );
        assert!(r.render_str("x", "{{ 'node1' | ip_network(24) }}", &ctx).is_err());
        assert_eq!(
            r.render_str("x", "{{ '10.9.0.20' | ip_network('28') }}", &ctx).unwrap(),
            "10.9.0.16/28"
        );
        let nasty = context! { v => "it's a \"test\" \\ $x %d" };
        assert_eq!(
            r.render_str("x", "{{ v | sql_literal }}", &nasty).unwrap(),
            "'it''s a \"test\" \\ $x %d'"
        );
        assert_eq!(
            r.render_str("x", "{{ v | sql_identifier }}", &nasty).unwrap(),
            "\"it's a \"\"test\"\" \\ $x %d\""
        );
        let yaml = r.render_str("x", "k: {{ v | yaml_string }}", &nasty).unwrap();
        let parsed: std::collections::BTreeMap<String, String> = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(
            parsed["k"], "it's a \"test\" \\ $x %d",
            "YAML reads the value back whole"
        );
        assert_eq!(
            r.render_str("x", "{{ v | ini_value }}", &nasty).unwrap(),
            "it's a \"test\" \\ $x %%d"
        );
        assert!(r.render_str("x", "{{ 'a\nb' | ini_value }}", &nasty).is_err());
        assert!(r.eval_bool("w", "s == 'hi'", &ctx).unwrap());
        let hv =
            context! { hostvars => context! { n1 => context! { ansible_host => "10.0.0.1" } }, hosts => vec!["n1"] };
        let entries = r
            .render_value("x", "{{ hosts | hosts_entries(hostvars) }}", &hv)
            .unwrap();
        assert_eq!(entries, serde_json::json!([{"ip": "10.0.0.1", "names": ["n1"]}]));
        let releases = context! {
            hostvars => context! { n1 => context! { r => "12" }, n2 => context! { r => "13" }, n3 => context! { r => "12" } },
            hosts => vec!["n1", "n2", "n3"],
        };
        assert_eq!(
            r.render_value(
                "x",
                "{{ hosts | map('extract', hostvars, 'r') | unique | list }}",
                &releases
            )
            .unwrap(),
            serde_json::json!(["12", "13"])
        );
        assert!(r
            .render_value("x", "{{ hosts | map('extract', hostvars, 'nope') | list }}", &releases)
            .is_err());
        assert_eq!(
            r.render_value("x", " {{ hosts }} ", &hv).unwrap(),
            serde_json::json!(["n1"])
        );
        assert_eq!(
            r.render_value("x", "{{ s }}-x", &ctx).unwrap(),
            serde_json::json!("hi-x")
        );
    }
}
