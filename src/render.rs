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

/// Renders templates from templates/ and inline strings from playbooks.
pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
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
        env.add_filter("hosts_entries", hosts_entries);
        env.add_function("now_epoch", now_epoch);
        Renderer { env }
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

    /// Renders a playbook value: a string that is one whole `{{ expression }}` yielding a list or
    /// a map gives that structure (as Ansible does); any other string renders as text.
    pub fn render_value(&self, origin: &str, source: &str, ctx: &Value) -> Result<serde_json::Value> {
        if let Some(expr) = whole_expression(source) {
            let compiled = self
                .env
                .compile_expression(expr)
                .map_err(|e| template_error(origin, &e))?;
            let value = compiled.eval(ctx).map_err(|e| template_error(origin, &e))?;
            if matches!(
                value.kind(),
                minijinja::value::ValueKind::Seq | minijinja::value::ValueKind::Map
            ) {
                return serde_json::to_value(&value).map_err(|e| miette!("{origin}: {e}"));
            }
        }
        self.render_str(origin, source, ctx).map(serde_json::Value::String)
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
    let name = e.name().unwrap_or(origin);
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

/// Seconds since the epoch on the controller, when rendered (clock-skew gates compare to it).
fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
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

/// The `quote` filter: one shell word (see [`crate::modules::q`]).
fn shell_quote(s: String) -> Result<String, Error> {
    crate::modules::try_q(&s).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("quote: {e}")))
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

    #[test]
    fn filters() {
        let (_d, r) = renderer();
        let ctx = context! { s => "hi", m => context! { k => vec![1, 2] } };
        assert_eq!(r.render_str("x", "{{ s | b64encode }}", &ctx).unwrap(), "aGk=");
        assert_eq!(r.render_str("x", "{{ 'aGk=' | b64decode }}", &ctx).unwrap(), "hi");
        assert_eq!(r.render_str("x", "{{ m | to_json }}", &ctx).unwrap(), r#"{"k":[1,2]}"#);
        assert!(r.render_str("x", "{{ m | to_yaml }}", &ctx).unwrap().contains("k:"));
        let quoted = r.render_str("x", "{{ \"it's $x\" | quote }}", &ctx).unwrap();
        assert_eq!(
            crate::modules::run_local(&format!("printf %s {quoted}")).stdout,
            "it's $x"
        );
        assert!(r.render_str("x", "{{ nope | mandatory }}", &ctx).is_err());
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
