//! Chart values as Helm handles them, as JSON values: a values file read from YAML
//! ([`parse_yaml`]), a `--set` expression applied to values ([`apply_set`], Helm's `strvals`),
//! and values laid over defaults ([`coalesce`], Helm's `CoalesceValues`).
//!
//! YAML is read as YAML 1.2 (`yes`, `on` and `off` are strings), where Helm's reader takes
//! YAML 1.1's booleans too.

use serde_json::{Map, Number, Value};

/// Deepest nesting of names (`a.b.c...`) and indexes a `--set` expression may have (Helm's
/// `MaxNestedNameLevel`).
const MAX_NESTING: usize = 30;
/// Largest list index a `--set` expression may use (Helm's `MaxIndex`).
const MAX_INDEX: usize = 65_536;

/// Reads a values file: a YAML mapping, where an empty file (or `null`) is no values. Keys
/// that are not strings become strings as Helm's YAML-to-JSON conversion writes them
/// (`1` → "1", `true` → "true", `1.5` → "1.5"); YAML merge keys (`<<: *anchor`) are applied.
pub fn parse_yaml(text: &str) -> Result<Value, String> {
    let mut yaml: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("values are not valid YAML: {e}"))?;
    yaml.apply_merge()
        .map_err(|e| format!("values have a bad merge key: {e}"))?;
    match yaml_to_json(yaml, "")? {
        Value::Null => Ok(Value::Object(Map::new())),
        values @ Value::Object(_) => Ok(values),
        other => Err(format!(
            "values must be a mapping of names to values, not {}",
            kind(&other)
        )),
    }
}

fn yaml_to_json(yaml: serde_yaml::Value, path: &str) -> Result<Value, String> {
    Ok(match yaml {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => {
            Value::Number(json_number(&n).ok_or_else(|| {
                format!("value {} at {:?} is not a finite number", n, display(path))
            })?)
        }
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| yaml_to_json(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        serde_yaml::Value::Mapping(mapping) => {
            let mut map = Map::new();
            for (key, value) in mapping {
                let key = key_string(key, path)?;
                let value = yaml_to_json(value, &join(path, &key))?;
                map.insert(key, value);
            }
            Value::Object(map)
        }
        serde_yaml::Value::Tagged(tagged) => yaml_to_json(tagged.value, path)?,
    })
}

fn json_number(n: &serde_yaml::Number) -> Option<Number> {
    if let Some(i) = n.as_i64() {
        Some(Number::from(i))
    } else if let Some(u) = n.as_u64() {
        Some(Number::from(u))
    } else {
        n.as_f64().and_then(Number::from_f64)
    }
}

/// A mapping key as Helm's YAML reader (sigs.k8s.io/yaml) turns it into a JSON key.
fn key_string(key: serde_yaml::Value, path: &str) -> Result<String, String> {
    match key {
        serde_yaml::Value::String(s) => Ok(s),
        serde_yaml::Value::Bool(b) => Ok(b.to_string()),
        serde_yaml::Value::Number(n) => Ok(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => go_float_key(f),
            (None, None, None) => n.to_string(),
        }),
        serde_yaml::Value::Tagged(tagged) => key_string(tagged.value, path),
        serde_yaml::Value::Null => Err(format!("a key under {:?} is null", display(path))),
        serde_yaml::Value::Sequence(_) | serde_yaml::Value::Mapping(_) => Err(format!(
            "a key under {:?} is a list or a mapping, not a name",
            display(path)
        )),
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`, as sigs.k8s.io/yaml writes a float key:
/// the shortest digits of the float32, with an exponent below 1e-4 and from 1e6 on.
fn go_float_key(f: f64) -> String {
    if f.is_nan() {
        return ".nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.to_string();
    }
    let single = f as f32;
    let scientific = format!("{single:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if single != 0.0 && !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        single.to_string()
    }
}

/// Applies one `--set` expression to `values`, as Helm's `strvals` parser does: `a.b=c`,
/// several at once (`a=1,b=2`), lists (`a={x,y}`), indexes (`a[0].b=x`, a list grows with
/// nulls), and `\` to take the next character as it is (`a\.b=x\,y` sets "a.b" to "x,y").
/// `a=` sets "". A value is typed as `--set` types it: `true`/`false` (any case) a boolean,
/// `null` null, a decimal integer not starting with 0 (or `0` itself) a number, anything else
/// a string. A name that crosses a value which is not a map (or an index one that is not a
/// list) is an error; null counts as missing.
///
/// Stricter than Helm where Helm silently sets nothing or a partial value: `a.`, `a[0]`,
/// `=x`, and text after a list's `}` other than `,` are errors too. On an error `values` is
/// left as it was.
pub fn apply_set(values: &mut Value, expr: &str) -> Result<(), String> {
    let mut map = match values {
        Value::Null => Map::new(),
        Value::Object(map) => map.clone(),
        other => {
            return Err(format!(
                "--set {expr:?}: values are {}, not a mapping",
                kind(other)
            ));
        }
    };
    let mut parser = SetParser {
        chars: expr.chars().collect(),
        at: 0,
    };
    while !parser.at_end() {
        parser
            .key(&mut map, "", 0)
            .map_err(|problem| format!("--set {expr:?}: {problem}"))?;
    }
    *values = Value::Object(map);
    Ok(())
}

struct SetParser {
    chars: Vec<char>,
    at: usize,
}

impl SetParser {
    fn at_end(&self) -> bool {
        self.at >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    /// Reads up to (and past) the first of `stop` not escaped by `\`; the text before it, and
    /// the stop character, or `None` at the end.
    fn until(&mut self, stop: &[char]) -> (String, Option<char>) {
        let mut text = String::new();
        while let Some(c) = self.peek() {
            self.at += 1;
            if stop.contains(&c) {
                return (text, Some(c));
            }
            if c == '\\' {
                match self.peek() {
                    Some(escaped) => {
                        self.at += 1;
                        text.push(escaped);
                    }
                    None => break,
                }
            } else {
                text.push(c);
            }
        }
        (text, None)
    }

    /// One `name...=value` into `data`, whose own name is `path`.
    fn key(
        &mut self,
        data: &mut Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        let (name, stop) = self.until(&['=', '[', ',', '.']);
        if name.is_empty() {
            return Err(if path.is_empty() {
                match stop {
                    Some(c) => format!("a key name is missing before {c:?}"),
                    None => "a key name is missing".to_string(),
                }
            } else {
                format!("key map {path:?} has no value")
            });
        }
        let full = join(path, &name);
        match stop {
            None => Err(format!("key {full:?} has no value")),
            Some(',') => Err(format!("key {full:?} has no value (cannot end with ,)")),
            Some('=') => {
                let value = self.value(&full)?;
                data.insert(name, value);
                Ok(())
            }
            Some('[') => {
                let index = self.index(&full)?;
                let mut list = match data.get(&name) {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(list)) => list.clone(),
                    Some(other) => return Err(not_a(&full, "list", other)),
                };
                self.item(&mut list, index, &format!("{full}[{index}]"), depth)?;
                data.insert(name, Value::Array(list));
                Ok(())
            }
            Some(_dot) => {
                let depth = nested(depth, &full)?;
                let mut inner = match data.get(&name) {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(map)) => map.clone(),
                    Some(other) => return Err(not_a(&full, "map", other)),
                };
                self.key(&mut inner, &full, depth)?;
                data.insert(name, Value::Object(inner));
                Ok(())
            }
        }
    }

    /// What follows `name[index]`: `=value`, another `[index]`, or `.name...`.
    fn item(
        &mut self,
        list: &mut Vec<Value>,
        index: usize,
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        let depth = nested(depth, path)?;
        let (text, stop) = self.until(&['[', '.', '=']);
        if !text.is_empty() {
            return Err(format!("unexpected {text:?} after the index of {path:?}"));
        }
        let value = match stop {
            None => return Err(format!("key {path:?} has no value")),
            Some('=') => self.value(path)?,
            Some('[') => {
                let next = self.index(path)?;
                let mut inner = match list.get(index) {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(inner)) => inner.clone(),
                    Some(other) => return Err(not_a(path, "list", other)),
                };
                self.item(&mut inner, next, &format!("{path}[{next}]"), depth)?;
                Value::Array(inner)
            }
            Some(_dot) => {
                // As in Helm, an item that is not a map is replaced by one.
                let mut inner = match list.get(index) {
                    Some(Value::Object(map)) => map.clone(),
                    _ => Map::new(),
                };
                self.key(&mut inner, path, depth)?;
                Value::Object(inner)
            }
        };
        if list.len() <= index {
            list.resize(index + 1, Value::Null);
        }
        list[index] = value;
        Ok(())
    }

    /// The index between `[` (already read) and `]`.
    fn index(&mut self, path: &str) -> Result<usize, String> {
        let (text, stop) = self.until(&[']']);
        if stop.is_none() {
            return Err(format!("the index of key {path:?} has no closing ]"));
        }
        let index: i64 = text
            .parse()
            .map_err(|_| format!("the index {text:?} of key {path:?} is not an integer"))?;
        if index < 0 {
            return Err(format!(
                "negative index {index} of key {path:?} is not allowed"
            ));
        }
        match usize::try_from(index) {
            Ok(index) if index <= MAX_INDEX => Ok(index),
            _ => Err(format!(
                "index {index} of key {path:?} is greater than the maximum of {MAX_INDEX}"
            )),
        }
    }

    /// The value after `=`: a `{list}` or text up to the next `,`.
    fn value(&mut self, path: &str) -> Result<Value, String> {
        if self.peek() != Some('{') {
            let (text, _) = self.until(&[',']);
            return Ok(typed(&text));
        }
        self.at += 1;
        let mut items = Vec::new();
        loop {
            let (text, stop) = self.until(&[',', '}']);
            match stop {
                None => {
                    return Err(format!("the list of key {path:?} must end with '}}'"));
                }
                Some(',') => items.push(typed(&text)),
                Some(_close) => {
                    items.push(typed(&text));
                    break;
                }
            }
        }
        match self.peek() {
            None => {}
            Some(',') => self.at += 1,
            Some(other) => {
                return Err(format!(
                    "unexpected {other:?} after the list of key {path:?}"
                ));
            }
        }
        Ok(Value::Array(items))
    }
}

fn nested(depth: usize, path: &str) -> Result<usize, String> {
    if depth >= MAX_NESTING {
        return Err(format!(
            "key {path:?} is nested deeper than {MAX_NESTING} levels"
        ));
    }
    Ok(depth + 1)
}

fn not_a(path: &str, wanted: &str, found: &Value) -> String {
    format!("key {path:?} is {}, not a {wanted}", kind(found))
}

/// A `--set` value's type, as Helm's `typedVal` decides it.
fn typed(text: &str) -> Value {
    if text.eq_ignore_ascii_case("true") {
        Value::Bool(true)
    } else if text.eq_ignore_ascii_case("false") {
        Value::Bool(false)
    } else if text.eq_ignore_ascii_case("null") {
        Value::Null
    } else if text == "0" {
        Value::from(0)
    } else if !text.is_empty() && !text.starts_with('0') {
        text.parse::<i64>()
            .map_or_else(|_| Value::String(text.to_string()), Value::from)
    } else {
        Value::String(text.to_string())
    }
}

/// `overrides` laid over `defaults`, as Helm coalesces values over a chart's: a value in
/// `overrides` wins, two maps merge key by key (deeply), and a null in `overrides` deletes
/// the key it overrides (so a user can remove a default). As in Helm, a null for a key the
/// defaults do not have stays null, and a null `overrides` as a whole is no overrides.
pub fn coalesce(defaults: &Value, overrides: &Value) -> Value {
    match (defaults, overrides) {
        (Value::Object(defaults), Value::Object(overrides)) => {
            let mut merged = overrides.clone();
            for (key, default) in defaults {
                match overrides.get(key) {
                    None => {
                        merged.insert(key.clone(), default.clone());
                    }
                    Some(Value::Null) => {
                        merged.remove(key);
                    }
                    Some(value @ Value::Object(_)) if default.is_object() => {
                        merged.insert(key.clone(), coalesce(default, value));
                    }
                    Some(_) => {}
                }
            }
            Value::Object(merged)
        }
        (defaults, Value::Null) => defaults.clone(),
        (_, overrides) => overrides.clone(),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// A path for a message: the top level has no name.
fn display(path: &str) -> &str {
    if path.is_empty() { "(top level)" } else { path }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(exprs: &[&str]) -> Value {
        let mut values = json!({});
        for expr in exprs {
            apply_set(&mut values, expr).unwrap_or_else(|e| panic!("{e}"));
        }
        values
    }

    fn set_error(start: Value, expr: &str) -> String {
        let mut values = start.clone();
        let error = apply_set(&mut values, expr).unwrap_err();
        assert_eq!(values, start, "values changed by a failed {expr:?}");
        assert!(error.contains(&format!("{expr:?}")), "{error}");
        error
    }

    #[test]
    fn yaml_values_files() {
        assert_eq!(parse_yaml("").unwrap(), json!({}));
        assert_eq!(parse_yaml("# only a comment\n").unwrap(), json!({}));
        assert_eq!(parse_yaml("null").unwrap(), json!({}));
        assert_eq!(parse_yaml("~\n").unwrap(), json!({}));
        assert_eq!(
            parse_yaml("a: 1\nb:\n  c: [x, 2, 1.5, true, null]\nd: \"007\"\ne:\n").unwrap(),
            json!({"a": 1, "b": {"c": ["x", 2, 1.5, true, null]}, "d": "007", "e": null})
        );
        assert_eq!(
            parse_yaml("---\nlist:\n  - name: a\n    port: 80\n").unwrap(),
            json!({"list": [{"name": "a", "port": 80}]})
        );
        assert_eq!(
            parse_yaml("big: 18446744073709551615\nneg: -3\n").unwrap(),
            json!({"big": 18446744073709551615u64, "neg": -3})
        );
    }

    #[test]
    fn yaml_keys_become_strings_as_helm_writes_them() {
        assert_eq!(
            parse_yaml("1: one\ntrue: yes\nfalse: no\n-2: minus\n1.5: half\n0.25: quarter\n")
                .unwrap(),
            json!({"1": "one", "true": "yes", "false": "no", "-2": "minus", "1.5": "half", "0.25": "quarter"})
        );
        assert_eq!(
            parse_yaml("nested:\n  80: http\n  443: https\n").unwrap(),
            json!({"nested": {"80": "http", "443": "https"}})
        );
        assert_eq!(go_float_key(1.5), "1.5");
        assert_eq!(go_float_key(100000.0), "100000");
        assert_eq!(go_float_key(1234567.0), "1.234567e+06");
        assert_eq!(go_float_key(0.0001), "0.0001");
        assert_eq!(go_float_key(0.00001), "1e-05");
        assert_eq!(go_float_key(0.0), "0");
        assert_eq!(go_float_key(f64::INFINITY), ".inf");
        assert_eq!(go_float_key(f64::NEG_INFINITY), "-.inf");
    }

    #[test]
    fn yaml_anchors_merge_keys_and_tags() {
        let values = parse_yaml(
            "base: &base\n  image: nginx\n  port: 80\nweb:\n  <<: *base\n  port: 8080\nlist: &l [1, 2]\ncopy: *l\ntagged: !custom {a: 1}\n",
        )
        .unwrap();
        assert_eq!(values["web"], json!({"image": "nginx", "port": 8080}));
        assert_eq!(values["copy"], json!([1, 2]));
        assert_eq!(values["tagged"], json!({"a": 1}));
    }

    #[test]
    fn yaml_errors_name_the_problem() {
        let error = parse_yaml("- a\n- b\n").unwrap_err();
        assert!(error.contains("a list"), "{error}");
        assert!(parse_yaml("just text").unwrap_err().contains("a string"));
        assert!(parse_yaml("42").unwrap_err().contains("a number"));
        assert!(parse_yaml("true").unwrap_err().contains("a boolean"));
        let error = parse_yaml("a: [1, 2\n").unwrap_err();
        assert!(error.contains("not valid YAML"), "{error}");
        let error = parse_yaml("a:\n  ~: x\n").unwrap_err();
        assert!(error.contains("under \"a\" is null"), "{error}");
        let error = parse_yaml("? [a, b]\n: x\n").unwrap_err();
        assert!(error.contains("not a name"), "{error}");
        let error = parse_yaml("a:\n  b: .nan\n").unwrap_err();
        assert!(error.contains("\"a.b\""), "{error}");
        assert!(error.contains("not a finite number"), "{error}");
        assert!(parse_yaml("a: 1\na: 2\n").is_err());
    }

    #[test]
    fn set_names_and_nesting() {
        assert_eq!(set(&["a=b"]), json!({"a": "b"}));
        assert_eq!(set(&["a.b.c=d"]), json!({"a": {"b": {"c": "d"}}}));
        assert_eq!(
            set(&["a=1,b=2,c.d=3"]),
            json!({"a": 1, "b": 2, "c": {"d": 3}})
        );
        assert_eq!(
            set(&["a.b=1", "a.c=2", "a.b=3"]),
            json!({"a": {"b": 3, "c": 2}})
        );
        // A trailing comma ends the expression.
        assert_eq!(set(&["a=1,"]), json!({"a": 1}));
        // Assigning replaces whatever was there, a map included.
        assert_eq!(set(&["a.b=1", "a=x"]), json!({"a": "x"}));
        // Null counts as missing.
        assert_eq!(set(&["a=null", "a.b=1"]), json!({"a": {"b": 1}}));
        let mut values = json!({"keep": {"x": 1}, "other": true});
        apply_set(&mut values, "keep.y=2").unwrap();
        assert_eq!(values, json!({"keep": {"x": 1, "y": 2}, "other": true}));
        let mut values = Value::Null;
        apply_set(&mut values, "a=1").unwrap();
        assert_eq!(values, json!({"a": 1}));
    }

    #[test]
    fn set_types_values_as_helm() {
        assert_eq!(
            set(&["a=true,b=FALSE,c=True,d=null,e=NULL,f=0,g=42,h=-7,i=+5"]),
            json!({"a": true, "b": false, "c": true, "d": null, "e": null, "f": 0, "g": 42, "h": -7, "i": 5})
        );
        assert_eq!(
            set(&["a=007,b=1.5,c=1e3,d=0x10,e=9223372036854775808,f=yes,g= 1,h=00"]),
            json!({"a": "007", "b": "1.5", "c": "1e3", "d": "0x10", "e": "9223372036854775808",
                   "f": "yes", "g": " 1", "h": "00"})
        );
        assert_eq!(set(&["a=9223372036854775807"])["a"], json!(i64::MAX));
        assert_eq!(set(&["a="]), json!({"a": ""}));
        assert_eq!(set(&["a=,b=1"]), json!({"a": "", "b": 1}));
        assert_eq!(set(&["a.b="]), json!({"a": {"b": ""}}));
        assert_eq!(set(&["a=x=y"]), json!({"a": "x=y"}));
        assert_eq!(set(&["a=x.y[0]"]), json!({"a": "x.y[0]"}));
    }

    #[test]
    fn set_escapes() {
        assert_eq!(set(&[r"a=x\,y"]), json!({"a": "x,y"}));
        assert_eq!(
            set(&[r"a\.b=1"]),
            json!({"a.b": 1}),
            "an escaped dot is part of the name"
        );
        assert_eq!(
            set(&[r"nodeSelector.kubernetes\.io/os=linux"]),
            json!({"nodeSelector": {"kubernetes.io/os": "linux"}})
        );
        assert_eq!(set(&[r"a=\{x\}"]), json!({"a": "{x}"}));
        assert_eq!(set(&[r"a={x\,y,z}"]), json!({"a": ["x,y", "z"]}));
        assert_eq!(set(&[r"a\=b=c"]), json!({"a=b": "c"}));
        assert_eq!(set(&[r"a=b\\c"]), json!({"a": r"b\c"}));
        assert_eq!(set(&[r"a=x\"]), json!({"a": "x"}));
        assert_eq!(set(&[r"a=\true"]), json!({"a": true}));
    }

    #[test]
    fn set_lists() {
        assert_eq!(set(&["a={x,y,1,true}"]), json!({"a": ["x", "y", 1, true]}));
        assert_eq!(set(&["a={x},b=2"]), json!({"a": ["x"], "b": 2}));
        assert_eq!(set(&["a={}"]), json!({"a": [""]}), "as in Helm");
        assert_eq!(set(&["a={,}"]), json!({"a": ["", ""]}));
        assert_eq!(set(&["a.b={1,2}"]), json!({"a": {"b": [1, 2]}}));
        assert_eq!(set(&["a=x{y}"]), json!({"a": "x{y}"}));
    }

    #[test]
    fn set_indexes() {
        assert_eq!(set(&["a[0]=x"]), json!({"a": ["x"]}));
        assert_eq!(set(&["a[2]=x"]), json!({"a": [null, null, "x"]}));
        assert_eq!(set(&["a[1]=y", "a[0]=x"]), json!({"a": ["x", "y"]}));
        assert_eq!(
            set(&["a[0].b=1,a[0].c=2,a[1].b=3"]),
            json!({"a": [{"b": 1, "c": 2}, {"b": 3}]})
        );
        assert_eq!(set(&["a[0][1]=x"]), json!({"a": [[null, "x"]]}));
        assert_eq!(set(&["a[0][0]=x", "a[0][1]=y"]), json!({"a": [["x", "y"]]}));
        assert_eq!(set(&["a[0]={1,2}"]), json!({"a": [[1, 2]]}));
        assert_eq!(set(&["a[0]="]), json!({"a": [""]}));
        assert_eq!(
            set(&["a.b[1].c.d=e"]),
            json!({"a": {"b": [null, {"c": {"d": "e"}}]}})
        );
        assert_eq!(set(&["a[+1]=x"]), json!({"a": [null, "x"]}));
        // An item that is not a map becomes one, as in Helm.
        assert_eq!(set(&["a[0]=x", "a[0].b=1"]), json!({"a": [{"b": 1}]}));
        // Indexing into an existing list keeps its other items.
        let mut values = json!({"hosts": [{"host": "a"}, {"host": "b"}]});
        apply_set(&mut values, "hosts[1].host=c").unwrap();
        assert_eq!(values, json!({"hosts": [{"host": "a"}, {"host": "c"}]}));
        assert_eq!(
            set(&["a[65536]=x"])["a"].as_array().map(Vec::len),
            Some(65537)
        );
    }

    #[test]
    fn set_errors_name_the_expression_and_the_problem() {
        let e = set_error(json!({}), "a.b");
        assert!(e.contains(r#"key "a.b" has no value"#), "{e}");
        let e = set_error(json!({}), "a");
        assert!(e.contains(r#"key "a" has no value"#), "{e}");
        let e = set_error(json!({}), "a=1,b");
        assert!(e.contains(r#"key "b" has no value"#), "{e}");
        let e = set_error(json!({}), "a,b=1");
        assert!(
            e.contains(r#"key "a" has no value (cannot end with ,)"#),
            "{e}"
        );
        let e = set_error(json!({}), "a=1,,b=2");
        assert!(e.contains("a key name is missing before ','"), "{e}");
        let e = set_error(json!({}), "=1");
        assert!(e.contains("a key name is missing before '='"), "{e}");
        let e = set_error(json!({}), "a.=1");
        assert!(e.contains(r#"key map "a" has no value"#), "{e}");
        let e = set_error(json!({}), "a.");
        assert!(e.contains(r#"key map "a" has no value"#), "{e}");
        let e = set_error(json!({}), "a[0].=1");
        assert!(e.contains(r#"key map "a[0]" has no value"#), "{e}");
        let e = set_error(json!({}), "a={x,y");
        assert!(
            e.contains(r#"the list of key "a" must end with '}'"#),
            "{e}"
        );
        let e = set_error(json!({}), "a={x}b=1");
        assert!(
            e.contains(r#"unexpected 'b' after the list of key "a""#),
            "{e}"
        );
        let e = set_error(json!({}), "a[0]");
        assert!(e.contains(r#"key "a[0]" has no value"#), "{e}");
        let e = set_error(json!({}), "a[0");
        assert!(
            e.contains(r#"the index of key "a" has no closing ]"#),
            "{e}"
        );
        let e = set_error(json!({}), "a[x]=1");
        assert!(
            e.contains(r#"the index "x" of key "a" is not an integer"#),
            "{e}"
        );
        let e = set_error(json!({}), "a[]=1");
        assert!(e.contains("is not an integer"), "{e}");
        let e = set_error(json!({}), "a[-1]=1");
        assert!(e.contains(r#"negative index -1 of key "a""#), "{e}");
        let e = set_error(json!({}), "a[65537]=1");
        assert!(e.contains("greater than the maximum of 65536"), "{e}");
        let e = set_error(json!({}), "a[99999999999999999999]=1");
        assert!(e.contains("is not an integer"), "{e}");
        let e = set_error(json!({}), "a[0]x=1");
        assert!(
            e.contains(r#"unexpected "x" after the index of "a[0]""#),
            "{e}"
        );
        let e = set_error(json!({"a": "text"}), "a.b=1");
        assert!(e.contains(r#"key "a" is a string, not a map"#), "{e}");
        let e = set_error(json!({"a": {"b": 1}}), "a.b.c=1");
        assert!(e.contains(r#"key "a.b" is a number, not a map"#), "{e}");
        let e = set_error(json!({"a": {"b": 1}}), "a[0]=1");
        assert!(e.contains(r#"key "a" is a mapping, not a list"#), "{e}");
        let e = set_error(json!({"a": [{"b": 1}]}), "a[0][0]=1");
        assert!(e.contains(r#"key "a[0]" is a mapping, not a list"#), "{e}");
        let e = set_error(json!(["x"]), "a=1");
        assert!(e.contains("values are a list, not a mapping"), "{e}");
        // A failure part way leaves the values as they were (set_error checks).
        set_error(json!({"keep": 1}), "a=1,b.c");
        // Helm's limit: 30 dots.
        let deep = format!("{}=1", vec!["k"; 32].join("."));
        let e = set_error(json!({}), &deep);
        assert!(e.contains("nested deeper than 30 levels"), "{e}");
        assert!(set(&[&format!("{}=1", vec!["k"; 31].join("."))])["k"]["k"]["k"].is_object());
        let e = set_error(json!({}), &format!("a{}=1", "[0]".repeat(40)));
        assert!(e.contains("nested deeper than 30 levels"), "{e}");
    }

    #[test]
    fn coalesce_lays_overrides_over_defaults() {
        let defaults = json!({
            "image": {"repository": "nginx", "tag": "", "pullPolicy": "IfNotPresent"},
            "replicaCount": 1,
            "resources": {},
            "list": [1, 2, 3],
            "labels": {"a": "1"},
            "nothing": null,
        });
        let overrides = json!({
            "image": {"tag": "1.27"},
            "replicaCount": 3,
            "resources": {"limits": {"cpu": "1"}},
            "list": [9],
            "extra": {"x": true},
        });
        assert_eq!(
            coalesce(&defaults, &overrides),
            json!({
                "image": {"repository": "nginx", "tag": "1.27", "pullPolicy": "IfNotPresent"},
                "replicaCount": 3,
                "resources": {"limits": {"cpu": "1"}},
                "list": [9],
                "labels": {"a": "1"},
                "nothing": null,
                "extra": {"x": true},
            })
        );
        // Inputs are not changed.
        assert_eq!(defaults["replicaCount"], 1);
        assert_eq!(coalesce(&defaults, &json!({})), defaults);
        assert_eq!(coalesce(&defaults, &Value::Null), defaults);
        assert_eq!(coalesce(&json!({}), &overrides), overrides);
    }

    #[test]
    fn coalesce_null_deletes_and_types_conflict() {
        let defaults = json!({"a": {"b": 1, "c": {"d": 2}}, "e": 3, "f": {"g": 1}});
        assert_eq!(
            coalesce(&defaults, &json!({"a": {"c": null}, "e": null})),
            json!({"a": {"b": 1}, "f": {"g": 1}})
        );
        assert_eq!(
            coalesce(&defaults, &json!({"a": null, "f": {"g": null}})),
            json!({"e": 3, "f": {}})
        );
        // A null with nothing under it to delete stays, as in Helm.
        assert_eq!(
            coalesce(&json!({}), &json!({"x": null})),
            json!({"x": null})
        );
        assert_eq!(
            coalesce(&defaults, &json!({"a": {"new": null}})),
            json!({"a": {"b": 1, "c": {"d": 2}, "new": null}, "e": 3, "f": {"g": 1}})
        );
        // A scalar over a map, and a map over a scalar: the override wins.
        assert_eq!(
            coalesce(&defaults, &json!({"a": "flat", "e": {"deep": 1}})),
            json!({"a": "flat", "e": {"deep": 1}, "f": {"g": 1}})
        );
        // A default of null under an override map: the map.
        assert_eq!(
            coalesce(&json!({"a": null}), &json!({"a": {"b": 1}})),
            json!({"a": {"b": 1}})
        );
        // --set then coalesce: Helm's order for a user's values over a chart's.
        let mut user = json!({});
        apply_set(&mut user, "image.tag=2,resources=null").unwrap();
        assert_eq!(
            coalesce(
                &json!({"image": {"repository": "nginx", "tag": ""}, "resources": {}}),
                &user
            ),
            json!({"image": {"repository": "nginx", "tag": 2}})
        );
    }
}
