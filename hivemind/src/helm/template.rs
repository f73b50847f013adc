//! Go's `text/template`, as Helm renders chart templates with it: text and `{{ actions }}`
//! (with `{{-`/`-}}` trimming and `{{/* comments */}}`), pipelines, variables, `if`/`else
//! if`/`else`, `with`, `range` (with `$i, $v :=`, `break`, `continue`), `define`, `template`,
//! `block`, Go's built-in functions and the Sprig and Helm functions charts commonly use
//! (`include`, `tpl`, `toYaml`, `nindent`, `default`, `required`...). Values are JSON values
//! (`serde_json::Value`): maps, lists, strings, numbers, booleans and nil.
//!
//! A missing map key reads as nil and prints as nothing, as Helm's `missingkey=zero` does for
//! values.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// How deep `include`/`template` may nest (a chart that includes itself fails, not hangs).
const MAX_DEPTH: usize = 64;
/// Most range iterations over a whole render.
const MAX_STEPS: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{template}:{line}: {message}")]
pub struct TemplateError {
    pub template: String,
    pub line: usize,
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Lexing: text and actions.

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Text(String),
    /// The inside of `{{ }}` without its trim markers, and its line.
    Action(String, usize),
}

fn split(name: &str, source: &str) -> Result<Vec<Token>, TemplateError> {
    let mut tokens = Vec::new();
    let mut rest = source;
    let mut line = 1;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let mut text = rest.to_string();
            if trim_next {
                text = text.trim_start().to_string();
            }
            tokens.push(Token::Text(text));
            break;
        };
        let mut text = rest[..open].to_string();
        line += text.matches('\n').count();
        let after = &rest[open + 2..];
        let trim_left =
            after.starts_with("- ") || after.starts_with("-\n") || after.starts_with("-\t");
        if trim_next {
            text = text.trim_start().to_string();
        }
        if trim_left {
            text = text.trim_end().to_string();
        }
        tokens.push(Token::Text(text));
        let inner_start = if trim_left { 1 } else { 0 };
        let body = &after[inner_start..];
        let close = find_close(body).ok_or_else(|| TemplateError {
            template: name.to_string(),
            line,
            message: "unclosed action".to_string(),
        })?;
        let mut inside = &body[..close];
        let trim_right =
            inside.ends_with(" -") || inside.ends_with("\n-") || inside.ends_with("\t-");
        if trim_right {
            inside = &inside[..inside.len() - 1];
        }
        let action_line = line;
        line += inside.matches('\n').count();
        let trimmed = inside.trim();
        if !(trimmed.starts_with("/*") && trimmed.ends_with("*/")) {
            tokens.push(Token::Action(trimmed.to_string(), action_line));
        }
        trim_next = trim_right;
        rest = &body[close + 2..];
    }
    Ok(tokens)
}

/// The `}}` closing an action, skipping strings and comments.
fn find_close(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = body[i + 2..].find("*/")?;
                i += end + 3;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Expressions inside an action.

#[derive(Debug, Clone, PartialEq)]
enum Word {
    Ident(String),
    /// `.a.b` (empty path: the dot itself).
    Field(Vec<String>),
    /// `$x.a.b` (`$` alone: the root).
    Var(String, Vec<String>),
    Str(String),
    Num(f64, bool),
    Bool(bool),
    Nil,
    Open,
    Close,
    Pipe,
    Declare,
    Assign,
    Comma,
}

fn words(text: &str) -> Result<Vec<Word>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let path = |chars: &[char], i: &mut usize| {
        let mut parts = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            *i += 1;
            let start = *i;
            while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
                *i += 1;
            }
            if *i > start {
                parts.push(chars[start..*i].iter().collect::<String>());
            }
        }
        parts
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Word::Open);
                i += 1;
            }
            ')' => {
                out.push(Word::Close);
                i += 1;
                if i < chars.len() && chars[i] == '.' {
                    // (expr).field: kept as a field applied to the group's result.
                    let fields = path(&chars, &mut i);
                    out.push(Word::Field(fields));
                    out.push(Word::Ident("\u{0}apply".to_string()));
                }
            }
            '|' => {
                out.push(Word::Pipe);
                i += 1;
            }
            ',' => {
                out.push(Word::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Word::Declare);
                i += 2;
            }
            '=' => {
                out.push(Word::Assign);
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                        s.push(match chars[i] {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                    } else {
                        s.push(chars[i]);
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unterminated string".to_string());
                }
                i += 1;
                out.push(Word::Str(s));
            }
            '`' => {
                let start = i + 1;
                i = start;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unterminated raw string".to_string());
                }
                out.push(Word::Str(chars[start..i].iter().collect()));
                i += 1;
            }
            '.' => {
                let fields = path(&chars, &mut i);
                out.push(Word::Field(fields));
            }
            '$' => {
                i += 1;
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                let fields = path(&chars, &mut i);
                out.push(Word::Var(name, fields));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let number = if let Some(hex) = text.strip_prefix("0x") {
                    i64::from_str_radix(hex, 16).map(|n| (n as f64, true)).ok()
                } else if let Ok(n) = text.parse::<i64>() {
                    Some((n as f64, true))
                } else {
                    text.parse::<f64>().ok().map(|f| (f, false))
                };
                let (n, int) = number.ok_or_else(|| format!("bad number {text}"))?;
                out.push(Word::Num(n, int));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let ident: String = chars[start..i].iter().collect();
                out.push(match ident.as_str() {
                    "true" => Word::Bool(true),
                    "false" => Word::Bool(false),
                    "nil" => Word::Nil,
                    _ => Word::Ident(ident),
                });
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Lit(Value),
    Group(Box<Pipeline>, Vec<String>),
    Call(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Command {
    args: Vec<Arg>,
}

#[derive(Debug, Clone, PartialEq)]
struct Pipeline {
    /// `$a :=` / `$a, $b :=` (range) / `$a =`.
    decl: Vec<String>,
    assign: bool,
    commands: Vec<Command>,
}

fn number(n: f64, int: bool) -> Value {
    if int {
        Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn parse_pipeline(words: &[Word]) -> Result<Pipeline, String> {
    let mut decl = Vec::new();
    let mut assign = false;
    let mut rest = words;
    // Declarations: `$x :=`, `$i, $v :=`, `$x =`.
    let position = words
        .iter()
        .position(|w| matches!(w, Word::Declare | Word::Assign));
    if let Some(p) = position {
        let names: Vec<String> = words[..p]
            .iter()
            .filter_map(|w| match w {
                Word::Var(name, fields) if fields.is_empty() => Some(name.clone()),
                _ => None,
            })
            .collect();
        let commas = words[..p].iter().filter(|w| **w == Word::Comma).count();
        if !names.is_empty() && names.len() == commas + 1 && names.len() + commas == p {
            decl = names;
            assign = words[p] == Word::Assign;
            rest = &words[p + 1..];
        }
    }
    let mut commands = Vec::new();
    let mut current = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        match &rest[i] {
            Word::Pipe => {
                if current.is_empty() {
                    return Err("empty command in pipeline".to_string());
                }
                commands.push(Command {
                    args: std::mem::take(&mut current),
                });
            }
            Word::Open => {
                let mut depth = 1;
                let start = i + 1;
                let mut j = start;
                while j < rest.len() && depth > 0 {
                    match rest[j] {
                        Word::Open => depth += 1,
                        Word::Close => depth -= 1,
                        _ => {}
                    }
                    j += 1;
                }
                if depth != 0 {
                    return Err("unclosed (".to_string());
                }
                let inner = parse_pipeline(&rest[start..j - 1])?;
                let mut fields = Vec::new();
                if let (Some(Word::Field(f)), Some(Word::Ident(apply))) =
                    (rest.get(j), rest.get(j + 1))
                    && apply == "\u{0}apply"
                {
                    fields = f.clone();
                    j += 2;
                }
                current.push(Arg::Group(Box::new(inner), fields));
                i = j;
                continue;
            }
            Word::Close => return Err("unexpected )".to_string()),
            Word::Field(f) => current.push(Arg::Field(f.clone())),
            Word::Var(name, f) => current.push(Arg::Var(name.clone(), f.clone())),
            Word::Str(s) => current.push(Arg::Lit(Value::String(s.clone()))),
            Word::Num(n, int) => current.push(Arg::Lit(number(*n, *int))),
            Word::Bool(b) => current.push(Arg::Lit(Value::Bool(*b))),
            Word::Nil => current.push(Arg::Lit(Value::Null)),
            Word::Ident(name) => current.push(Arg::Call(name.clone())),
            Word::Comma | Word::Declare | Word::Assign => {
                return Err("unexpected , := or =".to_string());
            }
        }
        i += 1;
    }
    if !current.is_empty() {
        commands.push(Command { args: current });
    }
    if commands.is_empty() {
        return Err("missing value".to_string());
    }
    Ok(Pipeline {
        decl,
        assign,
        commands,
    })
}

// ---------------------------------------------------------------------------------------------
// The tree.

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Print(Pipeline, usize),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>, usize),
    With(Vec<(Pipeline, Vec<Node>)>, Vec<Node>, usize),
    Range(Pipeline, Vec<Node>, Vec<Node>, usize),
    Template(String, Option<Pipeline>, usize),
    Break,
    Continue,
}

struct Parser<'a> {
    name: &'a str,
    tokens: Vec<Token>,
    at: usize,
    defines: BTreeMap<String, Vec<Node>>,
}

/// What ended a list of nodes.
enum Stop {
    End,
    Else(Option<String>),
    Eof,
}

impl Parser<'_> {
    fn error(&self, line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError {
            template: self.name.to_string(),
            line,
            message: message.into(),
        }
    }

    fn pipeline(&self, text: &str, line: usize) -> Result<Pipeline, TemplateError> {
        let words = words(text).map_err(|e| self.error(line, e))?;
        parse_pipeline(&words).map_err(|e| self.error(line, e))
    }

    /// Nodes up to `{{ end }}`, `{{ else ... }}` or the end of the source.
    fn list(&mut self) -> Result<(Vec<Node>, Stop, usize), TemplateError> {
        let mut nodes = Vec::new();
        while self.at < self.tokens.len() {
            let token = self.tokens[self.at].clone();
            self.at += 1;
            let (action, line) = match token {
                Token::Text(text) => {
                    if !text.is_empty() {
                        nodes.push(Node::Text(text));
                    }
                    continue;
                }
                Token::Action(action, line) => (action, line),
            };
            let (keyword, rest) = match action.split_once(char::is_whitespace) {
                Some((k, r)) => (k, r.trim()),
                None => (action.as_str(), ""),
            };
            match keyword {
                "end" => return Ok((nodes, Stop::End, line)),
                "else" => {
                    let rest = (!rest.is_empty()).then(|| rest.to_string());
                    return Ok((nodes, Stop::Else(rest), line));
                }
                "if" | "with" => {
                    let mut branches = vec![(self.pipeline(rest, line)?, Vec::new())];
                    let mut otherwise = Vec::new();
                    loop {
                        let (body, end, at) = self.list()?;
                        if let Some(branch) = branches.last_mut() {
                            branch.1 = body;
                        }
                        match end {
                            Stop::End => break,
                            Stop::Eof => {
                                return Err(self.error(line, format!("{keyword} without end")));
                            }
                            Stop::Else(None) => {
                                let (body, end, at) = self.list()?;
                                if !matches!(end, Stop::End) {
                                    return Err(self.error(at, "else after else"));
                                }
                                otherwise = body;
                                break;
                            }
                            Stop::Else(Some(chained)) => {
                                let (chained_keyword, condition) = chained
                                    .split_once(char::is_whitespace)
                                    .unwrap_or((chained.as_str(), ""));
                                if chained_keyword != keyword {
                                    return Err(self.error(
                                        at,
                                        format!("else {chained_keyword} in {keyword}"),
                                    ));
                                }
                                branches.push((self.pipeline(condition.trim(), at)?, Vec::new()));
                            }
                        }
                    }
                    nodes.push(if keyword == "if" {
                        Node::If(branches, otherwise, line)
                    } else {
                        Node::With(branches, otherwise, line)
                    });
                }
                "range" => {
                    let pipeline = self.pipeline(rest, line)?;
                    let (body, end, at) = self.list()?;
                    let otherwise = match end {
                        Stop::End => Vec::new(),
                        Stop::Else(None) => {
                            let (body, end, _) = self.list()?;
                            if !matches!(end, Stop::End) {
                                return Err(self.error(at, "range's else without end"));
                            }
                            body
                        }
                        _ => return Err(self.error(line, "range without end")),
                    };
                    nodes.push(Node::Range(pipeline, body, otherwise, line));
                }
                "define" | "block" => {
                    let words = words(rest).map_err(|e| self.error(line, e))?;
                    let Some(Word::Str(name)) = words.first() else {
                        return Err(self.error(line, format!("{keyword} needs a quoted name")));
                    };
                    let name = name.clone();
                    let argument = if keyword == "block" && words.len() > 1 {
                        Some(parse_pipeline(&words[1..]).map_err(|e| self.error(line, e))?)
                    } else {
                        None
                    };
                    let (body, end, _) = self.list()?;
                    if !matches!(end, Stop::End) {
                        return Err(self.error(line, format!("{keyword} without end")));
                    }
                    self.defines.insert(name.clone(), body);
                    if keyword == "block" {
                        nodes.push(Node::Template(name, argument, line));
                    }
                }
                "template" => {
                    let words = words(rest).map_err(|e| self.error(line, e))?;
                    let Some(Word::Str(name)) = words.first() else {
                        return Err(self.error(line, "template needs a quoted name"));
                    };
                    let argument = if words.len() > 1 {
                        Some(parse_pipeline(&words[1..]).map_err(|e| self.error(line, e))?)
                    } else {
                        None
                    };
                    nodes.push(Node::Template(name.clone(), argument, line));
                }
                "break" => nodes.push(Node::Break),
                "continue" => nodes.push(Node::Continue),
                _ => nodes.push(Node::Print(self.pipeline(&action, line)?, line)),
            }
        }
        Ok((nodes, Stop::Eof, 0))
    }
}

// ---------------------------------------------------------------------------------------------
// Templates and rendering.

/// Parsed templates by name: files and their `define`s, which any of them may call.
#[derive(Debug, Default, Clone)]
pub struct Templates {
    trees: BTreeMap<String, Vec<Node>>,
}

enum Flow {
    Normal,
    Break,
    Continue,
}

struct Render<'a> {
    templates: &'a Templates,
    name: String,
    vars: Vec<(String, Value)>,
    depth: usize,
    steps: usize,
}

impl Templates {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `source` as template `name` (its `define`s become templates too).
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), TemplateError> {
        let tokens = split(name, source)?;
        let mut parser = Parser {
            name,
            tokens,
            at: 0,
            defines: BTreeMap::new(),
        };
        let (nodes, end, line) = parser.list()?;
        if !matches!(end, Stop::Eof) {
            return Err(parser.error(line, "end or else without a block"));
        }
        self.trees.extend(parser.defines);
        self.trees.insert(name.to_string(), nodes);
        Ok(())
    }

    pub fn has(&self, name: &str) -> bool {
        self.trees.contains_key(name)
    }

    /// Renders template `name` with `data` as the dot.
    pub fn render(&self, name: &str, data: &Value) -> Result<String, TemplateError> {
        let mut render = Render {
            templates: self,
            name: name.to_string(),
            vars: vec![(String::new(), data.clone())],
            depth: 0,
            steps: 0,
        };
        let mut out = String::new();
        render.template(name, data, &mut out, 0)?;
        Ok(out)
    }
}

/// Go's truth: false, 0, nil, and empty strings, lists and maps are false.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// How a value prints (`{{ . }}`): strings as they are, integers without a fraction, nil as
/// nothing, lists and maps as Go prints them.
pub fn print(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number_text(n),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(print).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => format!(
            "map[{}]",
            map.iter()
                .map(|(k, v)| format!("{k}:{}", print(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn number_text(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    let f = n.as_f64().unwrap_or_default();
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

fn field(value: &Value, path: &[String]) -> Value {
    let mut current = value.clone();
    for key in path {
        current = match current {
            Value::Object(map) => map.get(key).cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
    }
    current
}

impl Render<'_> {
    fn error(&self, line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError {
            template: self.name.clone(),
            line,
            message: message.into(),
        }
    }

    fn template(
        &mut self,
        name: &str,
        dot: &Value,
        out: &mut String,
        line: usize,
    ) -> Result<(), TemplateError> {
        let tree = self
            .templates
            .trees
            .get(name)
            .ok_or_else(|| self.error(line, format!("no template {name:?}")))?;
        if self.depth >= MAX_DEPTH {
            return Err(self.error(line, format!("templates nest deeper than {MAX_DEPTH}")));
        }
        let saved_name = std::mem::replace(&mut self.name, name.to_string());
        let saved_vars = std::mem::replace(&mut self.vars, vec![(String::new(), dot.clone())]);
        self.depth += 1;
        let result = self.nodes(tree, dot, out);
        self.depth -= 1;
        self.vars = saved_vars;
        self.name = saved_name;
        result.map(drop)
    }

    fn nodes(
        &mut self,
        nodes: &[Node],
        dot: &Value,
        out: &mut String,
    ) -> Result<Flow, TemplateError> {
        for node in nodes {
            match self.node(node, dot, out)? {
                Flow::Normal => {}
                flow => return Ok(flow),
            }
        }
        Ok(Flow::Normal)
    }

    fn scoped(
        &mut self,
        nodes: &[Node],
        dot: &Value,
        out: &mut String,
    ) -> Result<Flow, TemplateError> {
        let mark = self.vars.len();
        let flow = self.nodes(nodes, dot, out);
        self.vars.truncate(mark);
        flow
    }

    fn node(&mut self, node: &Node, dot: &Value, out: &mut String) -> Result<Flow, TemplateError> {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Print(pipeline, line) => {
                let value = self.pipeline(pipeline, dot, *line)?;
                if pipeline.decl.is_empty() {
                    out.push_str(&print(&value));
                }
            }
            Node::If(branches, otherwise, line) | Node::With(branches, otherwise, line) => {
                let with = matches!(node, Node::With(..));
                for (condition, body) in branches {
                    let mark = self.vars.len();
                    let value = self.pipeline(condition, dot, *line)?;
                    if truthy(&value) {
                        let inner = if with { value } else { dot.clone() };
                        let flow = self.nodes(body, &inner, out);
                        self.vars.truncate(mark);
                        return flow;
                    }
                    self.vars.truncate(mark);
                }
                return self.scoped(otherwise, dot, out);
            }
            Node::Range(pipeline, body, otherwise, line) => {
                let mark = self.vars.len();
                let mut plain = pipeline.clone();
                let names = std::mem::take(&mut plain.decl);
                let value = self.pipeline(&plain, dot, *line)?;
                let items: Vec<(Value, Value)> = match &value {
                    Value::Array(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (Value::from(i), v.clone()))
                        .collect(),
                    Value::Object(map) => map
                        .iter()
                        .map(|(k, v)| (Value::String(k.clone()), v.clone()))
                        .collect(),
                    Value::Number(n) => (0..n.as_i64().unwrap_or(0).max(0))
                        .map(|i| (Value::from(i), Value::from(i)))
                        .collect(),
                    Value::Null => Vec::new(),
                    other => return Err(self.error(*line, format!("range over {}", print(other)))),
                };
                if items.is_empty() {
                    return self.scoped(otherwise, dot, out);
                }
                for (key, item) in items {
                    self.steps += 1;
                    if self.steps > MAX_STEPS {
                        return Err(self.error(*line, "too many range iterations"));
                    }
                    match names.as_slice() {
                        [] => {}
                        [v] => self.vars.push((v.clone(), item.clone())),
                        [k, v, ..] => {
                            self.vars.push((k.clone(), key));
                            self.vars.push((v.clone(), item.clone()));
                        }
                    }
                    let flow = self.nodes(body, &item, out)?;
                    self.vars.truncate(mark);
                    if matches!(flow, Flow::Break) {
                        break;
                    }
                }
            }
            Node::Template(name, argument, line) => {
                let value = match argument {
                    Some(pipeline) => self.pipeline(pipeline, dot, *line)?,
                    None => Value::Null,
                };
                self.template(name, &value, out, *line)?;
            }
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    fn var(&self, name: &str, line: usize) -> Result<Value, TemplateError> {
        if name.is_empty() {
            return Ok(self.vars.first().map(|v| v.1.clone()).unwrap_or_default());
        }
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.error(line, format!("undefined variable ${name}")))
    }

    fn pipeline(
        &mut self,
        pipeline: &Pipeline,
        dot: &Value,
        line: usize,
    ) -> Result<Value, TemplateError> {
        let mut value: Option<Value> = None;
        for command in &pipeline.commands {
            value = Some(self.command(command, dot, value, line)?);
        }
        let value = value.unwrap_or_default();
        if pipeline.assign {
            let name = &pipeline.decl[0];
            let slot = self
                .vars
                .iter_mut()
                .rev()
                .find(|(n, _)| n == name)
                .ok_or_else(|| TemplateError {
                    template: self.name.clone(),
                    line,
                    message: format!("undefined variable ${name}"),
                })?;
            slot.1 = value.clone();
        } else if let Some(name) = pipeline.decl.first() {
            self.vars.push((name.clone(), value.clone()));
        }
        Ok(value)
    }

    fn arg(&mut self, arg: &Arg, dot: &Value, line: usize) -> Result<Value, TemplateError> {
        Ok(match arg {
            Arg::Field(path) => field(dot, path),
            Arg::Var(name, path) => field(&self.var(name, line)?, path),
            Arg::Lit(value) => value.clone(),
            Arg::Group(pipeline, path) => {
                let mark = self.vars.len();
                let value = self.pipeline(pipeline, dot, line)?;
                self.vars.truncate(mark);
                field(&value, path)
            }
            Arg::Call(name) => self.call(name, Vec::new(), dot, line)?,
        })
    }

    fn command(
        &mut self,
        command: &Command,
        dot: &Value,
        piped: Option<Value>,
        line: usize,
    ) -> Result<Value, TemplateError> {
        let (first, rest) = command
            .args
            .split_first()
            .ok_or_else(|| self.error(line, "empty command"))?;
        match first {
            Arg::Call(name) => {
                // `and`/`or` stop at their answer, as Go's do.
                if name == "and" || name == "or" {
                    let mut last = Value::Null;
                    let mut all: Vec<&Arg> = rest.iter().collect();
                    let piped_arg = piped.map(Arg::Lit);
                    if let Some(p) = &piped_arg {
                        all.push(p);
                    }
                    for arg in all {
                        last = self.arg(arg, dot, line)?;
                        let truth = truthy(&last);
                        if (name == "and" && !truth) || (name == "or" && truth) {
                            return Ok(last);
                        }
                    }
                    return Ok(last);
                }
                let mut args = Vec::with_capacity(rest.len() + 1);
                for arg in rest {
                    args.push(self.arg(arg, dot, line)?);
                }
                if let Some(piped) = piped {
                    args.push(piped);
                }
                self.call(name, args, dot, line)
            }
            Arg::Field(path) if !rest.is_empty() || piped.is_some() => {
                // The methods charts call on Helm's objects: `.Capabilities.APIVersions.Has
                // "apps/v1"` and `.Files.Get "name"`.
                let (method, receiver) = path
                    .split_last()
                    .ok_or_else(|| self.error(line, "only a function takes arguments"))?;
                let receiver = field(dot, receiver);
                let mut args = Vec::with_capacity(rest.len() + 1);
                for arg in rest {
                    args.push(self.arg(arg, dot, line)?);
                }
                args.extend(piped);
                match (method.as_str(), &receiver, args.as_slice()) {
                    ("Has", Value::Array(items), [wanted]) => {
                        Ok(Value::Bool(items.iter().any(|i| print(i) == print(wanted))))
                    }
                    ("Get", Value::Object(files), [name]) => Ok(files
                        .get(&print(name))
                        .cloned()
                        .unwrap_or_else(|| Value::String(String::new()))),
                    _ => Err(self.error(
                        line,
                        format!("{method} is not a method this renderer has (only Has and Get)"),
                    )),
                }
            }
            other => {
                if !rest.is_empty() || piped.is_some() {
                    return Err(self.error(line, "only a function takes arguments"));
                }
                self.arg(other, dot, line)
            }
        }
    }

    fn call(
        &mut self,
        name: &str,
        args: Vec<Value>,
        dot: &Value,
        line: usize,
    ) -> Result<Value, TemplateError> {
        match name {
            "include" => {
                let [template, data] = args.as_slice() else {
                    return Err(self.error(line, "include takes a name and a value"));
                };
                let mut out = String::new();
                self.template(&print(template), data, &mut out, line)?;
                Ok(Value::String(out))
            }
            "tpl" => {
                let [source, data] = args.as_slice() else {
                    return Err(self.error(line, "tpl takes a template and a value"));
                };
                let mut templates = self.templates.clone();
                templates
                    .add("tpl", &print(source))
                    .map_err(|e| self.error(line, e.to_string()))?;
                templates
                    .render("tpl", data)
                    .map(Value::String)
                    .map_err(|e| self.error(line, e.to_string()))
            }
            _ => functions::call(name, args, dot).map_err(|e| self.error(line, e)),
        }
    }
}

mod functions {
    //! The functions: Go's built-ins, and the Sprig and Helm ones charts use.

    use super::*;

    fn text(v: &Value) -> String {
        print(v)
    }

    fn int(v: &Value) -> i64 {
        match v {
            Value::Number(n) => n
                .as_i64()
                .unwrap_or_else(|| n.as_f64().unwrap_or_default() as i64),
            Value::String(s) => s.trim().parse().unwrap_or(0),
            Value::Bool(b) => i64::from(*b),
            _ => 0,
        }
    }

    fn float(v: &Value) -> f64 {
        match v {
            Value::Number(n) => n.as_f64().unwrap_or_default(),
            Value::String(s) => s.trim().parse().unwrap_or(0.0),
            _ => 0.0,
        }
    }

    fn need(name: &str, args: &[Value], n: usize) -> Result<(), String> {
        if args.len() != n {
            return Err(format!("{name} takes {n} argument(s), got {}", args.len()));
        }
        Ok(())
    }

    fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
            (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
            _ => None,
        }
    }

    fn equal(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            _ => a == b,
        }
    }

    /// `toYaml`: block YAML without the document marker or a final newline.
    pub fn to_yaml(value: &Value) -> String {
        if value.is_null() {
            return "null".to_string();
        }
        serde_yaml::to_string(value)
            .unwrap_or_default()
            .trim_start_matches("---\n")
            .trim_end_matches('\n')
            .to_string()
    }

    fn indent(spaces: i64, s: &str) -> String {
        let pad = " ".repeat(spaces.max(0) as usize);
        s.split('\n')
            .map(|l| format!("{pad}{l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Go's `printf` verbs charts use: `%s %d %v %q %f %x %t %%`, with widths ignored.
    fn printf(format: &str, args: &[Value]) -> String {
        let mut out = String::new();
        let mut args = args.iter();
        let mut chars = format.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let mut flags = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() || d == '.' || d == '-' || d == '+' || d == ' ' || d == '#' {
                    flags.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some(verb) => {
                    let arg = args.next().cloned().unwrap_or(Value::Null);
                    match verb {
                        'd' => {
                            let _ = write!(out, "{}", int(&arg));
                        }
                        'q' => {
                            out.push_str(&serde_json::to_string(&text(&arg)).unwrap_or_default())
                        }
                        'f' => {
                            let precision = flags
                                .split_once('.')
                                .and_then(|(_, p)| p.parse::<usize>().ok())
                                .unwrap_or(6);
                            let _ = write!(out, "{:.*}", precision, float(&arg));
                        }
                        'x' => match &arg {
                            Value::Number(_) => {
                                let _ = write!(out, "{:x}", int(&arg));
                            }
                            other => out.push_str(&hex::encode(text(other))),
                        },
                        _ => out.push_str(&text(&arg)),
                    }
                }
                None => out.push('%'),
            }
        }
        out
    }

    pub fn call(name: &str, args: Vec<Value>, _dot: &Value) -> Result<Value, String> {
        let a = &args;
        let s = |i: usize| a.get(i).map(text).unwrap_or_default();
        Ok(match name {
            // Go's built-ins.
            "not" => {
                need(name, a, 1)?;
                Value::Bool(!truthy(&a[0]))
            }
            "len" => {
                need(name, a, 1)?;
                Value::from(match &a[0] {
                    Value::String(s) => s.len(),
                    Value::Array(v) => v.len(),
                    Value::Object(m) => m.len(),
                    Value::Null => 0,
                    other => return Err(format!("len of {}", text(other))),
                })
            }
            "index" => {
                let mut current = a.first().cloned().unwrap_or_default();
                for key in a.iter().skip(1) {
                    current = match (&current, key) {
                        (Value::Array(v), k) => v.get(int(k) as usize).cloned().unwrap_or_default(),
                        (Value::Object(m), k) => m.get(&text(k)).cloned().unwrap_or_default(),
                        _ => Value::Null,
                    };
                }
                current
            }
            "print" => Value::String(a.iter().map(text).collect::<Vec<_>>().join("")),
            "println" => Value::String(format!(
                "{}\n",
                a.iter().map(text).collect::<Vec<_>>().join(" ")
            )),
            "printf" => Value::String(printf(&s(0), a.get(1..).unwrap_or_default())),
            "eq" => Value::Bool(a.len() >= 2 && a[1..].iter().any(|b| equal(&a[0], b))),
            "ne" => {
                need(name, a, 2)?;
                Value::Bool(!equal(&a[0], &a[1]))
            }
            "lt" | "le" | "gt" | "ge" => {
                need(name, a, 2)?;
                let order = compare(&a[0], &a[1]).ok_or_else(|| {
                    format!("{name}: cannot compare {} and {}", text(&a[0]), text(&a[1]))
                })?;
                Value::Bool(match name {
                    "lt" => order.is_lt(),
                    "le" => order.is_le(),
                    "gt" => order.is_gt(),
                    _ => order.is_ge(),
                })
            }
            // Sprig and Helm.
            "default" => {
                need(name, a, 2)?;
                if truthy(&a[1]) {
                    a[1].clone()
                } else {
                    a[0].clone()
                }
            }
            "empty" => {
                need(name, a, 1)?;
                Value::Bool(!truthy(&a[0]))
            }
            "coalesce" => a.iter().find(|v| truthy(v)).cloned().unwrap_or_default(),
            "ternary" => {
                need(name, a, 3)?;
                if truthy(&a[2]) {
                    a[0].clone()
                } else {
                    a[1].clone()
                }
            }
            "required" => {
                need(name, a, 2)?;
                if a[1].is_null() || a[1] == Value::String(String::new()) {
                    return Err(s(0));
                }
                a[1].clone()
            }
            "fail" => return Err(s(0)),
            "quote" => Value::String(
                a.iter()
                    .filter(|v| !v.is_null())
                    .map(|v| serde_json::to_string(&text(v)).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            "squote" => Value::String(
                a.iter()
                    .filter(|v| !v.is_null())
                    .map(|v| format!("'{}'", text(v)))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            "upper" => Value::String(s(0).to_uppercase()),
            "lower" => Value::String(s(0).to_lowercase()),
            "title" => Value::String(
                s(0).split(' ')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            "trim" => Value::String(s(0).trim().to_string()),
            "trimSuffix" => Value::String(
                s(1).strip_suffix(s(0).as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| s(1)),
            ),
            "trimPrefix" => Value::String(
                s(1).strip_prefix(s(0).as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| s(1)),
            ),
            "trimAll" => Value::String(s(1).trim_matches(|c| s(0).contains(c)).to_string()),
            "trunc" => {
                need(name, a, 2)?;
                let n = int(&a[0]);
                let chars: Vec<char> = s(1).chars().collect();
                let kept: String = if n >= 0 {
                    chars.iter().take(n as usize).collect()
                } else {
                    chars
                        .iter()
                        .skip(chars.len().saturating_sub((-n) as usize))
                        .collect()
                };
                Value::String(kept)
            }
            "replace" => {
                need(name, a, 3)?;
                Value::String(s(2).replace(&s(0), &s(1)))
            }
            "contains" => Value::Bool(s(1).contains(&s(0))),
            "hasPrefix" => Value::Bool(s(1).starts_with(&s(0))),
            "hasSuffix" => Value::Bool(s(1).ends_with(&s(0))),
            "repeat" => Value::String(s(1).repeat(int(&a[0]).max(0) as usize)),
            "nospace" => Value::String(s(0).split_whitespace().collect()),
            "indent" => {
                need(name, a, 2)?;
                Value::String(indent(int(&a[0]), &s(1)))
            }
            "nindent" => {
                need(name, a, 2)?;
                Value::String(format!("\n{}", indent(int(&a[0]), &s(1))))
            }
            "toYaml" => {
                need(name, a, 1)?;
                Value::String(to_yaml(&a[0]))
            }
            "toJson" | "toRawJson" => {
                Value::String(serde_json::to_string(&a[0]).unwrap_or_default())
            }
            "toPrettyJson" => {
                Value::String(serde_json::to_string_pretty(&a[0]).unwrap_or_default())
            }
            "fromYaml" => serde_yaml::from_str(&s(0)).unwrap_or(Value::Object(Map::new())),
            "fromJson" => serde_json::from_str(&s(0)).unwrap_or(Value::Object(Map::new())),
            "toString" => Value::String(s(0)),
            "int" | "int64" => Value::from(int(&a[0])),
            "float64" => number(float(&a[0]), false),
            "atoi" => Value::from(s(0).trim().parse::<i64>().unwrap_or(0)),
            "add" => Value::from(a.iter().map(int).sum::<i64>()),
            "add1" => Value::from(int(&a[0]) + 1),
            "sub" => Value::from(int(&a[0]) - int(&a[1])),
            "mul" => Value::from(a.iter().map(int).product::<i64>()),
            "div" => {
                let d = int(&a[1]);
                if d == 0 {
                    return Err("div by zero".to_string());
                }
                Value::from(int(&a[0]) / d)
            }
            "mod" => {
                let d = int(&a[1]);
                if d == 0 {
                    return Err("mod by zero".to_string());
                }
                Value::from(int(&a[0]) % d)
            }
            "max" => Value::from(a.iter().map(int).max().unwrap_or(0)),
            "min" => Value::from(a.iter().map(int).min().unwrap_or(0)),
            "list" | "tuple" => Value::Array(a.clone()),
            "dict" => {
                let mut map = Map::new();
                for pair in a.chunks(2) {
                    map.insert(text(&pair[0]), pair.get(1).cloned().unwrap_or_default());
                }
                Value::Object(map)
            }
            "get" => match a.first() {
                Some(Value::Object(m)) => m
                    .get(&s(1))
                    .cloned()
                    .unwrap_or(Value::String(String::new())),
                _ => Value::String(String::new()),
            },
            "hasKey" => {
                Value::Bool(matches!(a.first(), Some(Value::Object(m)) if m.contains_key(&s(1))))
            }
            "keys" => {
                let mut keys: Vec<Value> = a
                    .iter()
                    .filter_map(|m| m.as_object())
                    .flat_map(|m| m.keys().cloned().map(Value::String))
                    .collect();
                keys.sort_by_key(text);
                Value::Array(keys)
            }
            "values" => Value::Array(
                a.first()
                    .and_then(|m| m.as_object())
                    .map(|m| m.values().cloned().collect())
                    .unwrap_or_default(),
            ),
            "merge" | "mergeOverwrite" => {
                let mut result = Map::new();
                let ordered: Vec<&Value> = if name == "merge" {
                    a.iter().rev().collect()
                } else {
                    a.iter().collect()
                };
                for map in ordered.into_iter().filter_map(|m| m.as_object()) {
                    for (k, v) in map {
                        result.insert(k.clone(), v.clone());
                    }
                }
                Value::Object(result)
            }
            "pick" | "omit" => {
                let Some(map) = a.first().and_then(|m| m.as_object()) else {
                    return Ok(Value::Object(Map::new()));
                };
                let names: Vec<String> = a[1..].iter().map(text).collect();
                Value::Object(
                    map.iter()
                        .filter(|(k, _)| names.contains(k) == (name == "pick"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                )
            }
            "first" => a
                .first()
                .and_then(|l| l.as_array())
                .and_then(|l| l.first())
                .cloned()
                .unwrap_or_default(),
            "last" => a
                .first()
                .and_then(|l| l.as_array())
                .and_then(|l| l.last())
                .cloned()
                .unwrap_or_default(),
            "rest" => Value::Array(
                a.first()
                    .and_then(|l| l.as_array())
                    .map(|l| l.iter().skip(1).cloned().collect())
                    .unwrap_or_default(),
            ),
            "append" | "push" => {
                let mut list = a
                    .first()
                    .and_then(|l| l.as_array())
                    .cloned()
                    .unwrap_or_default();
                list.extend(a.iter().skip(1).cloned());
                Value::Array(list)
            }
            "has" => Value::Bool(
                a.get(1)
                    .and_then(|l| l.as_array())
                    .is_some_and(|l| l.iter().any(|v| equal(v, &a[0]))),
            ),
            "uniq" => {
                let mut seen = Vec::new();
                for v in a
                    .first()
                    .and_then(|l| l.as_array())
                    .cloned()
                    .unwrap_or_default()
                {
                    if !seen.contains(&v) {
                        seen.push(v);
                    }
                }
                Value::Array(seen)
            }
            "join" => Value::String(
                a.get(1)
                    .and_then(|l| l.as_array())
                    .map(|l| l.iter().map(text).collect::<Vec<_>>().join(&s(0)))
                    .unwrap_or_else(|| s(1)),
            ),
            "splitList" => Value::Array(
                s(1).split(s(0).as_str())
                    .map(|p| Value::String(p.to_string()))
                    .collect(),
            ),
            "split" => Value::Object(
                s(1).split(s(0).as_str())
                    .enumerate()
                    .map(|(i, p)| (format!("_{i}"), Value::String(p.to_string())))
                    .collect(),
            ),
            "until" => Value::Array((0..int(&a[0]).max(0)).map(Value::from).collect()),
            "b64enc" => {
                use base64::Engine as _;
                Value::String(base64::engine::general_purpose::STANDARD.encode(s(0)))
            }
            "b64dec" => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s(0))
                    .map_err(|e| format!("b64dec: {e}"))?;
                Value::String(String::from_utf8_lossy(&bytes).into_owned())
            }
            "sha256sum" => {
                use sha2::Digest as _;
                Value::String(hex::encode(sha2::Sha256::digest(s(0).as_bytes())))
            }
            "kindIs" => Value::Bool(kind(a.get(1).unwrap_or(&Value::Null)) == s(0)),
            "kindOf" | "typeOf" => {
                Value::String(kind(a.first().unwrap_or(&Value::Null)).to_string())
            }
            "semverCompare" => Value::Bool(semver_compare(&s(0), &s(1))),
            "lookup" => Value::Object(Map::new()),
            "now" => Value::String(String::new()),
            "uuidv4" => Value::String(format!("{:032x}", rand::random::<u128>())),
            "randAlphaNum" => {
                let n = int(&a[0]).clamp(0, 4096) as usize;
                const ALPHABET: &[u8] =
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
                Value::String(
                    (0..n)
                        .map(|_| ALPHABET[rand::random::<u8>() as usize % ALPHABET.len()] as char)
                        .collect(),
                )
            }
            other => return Err(format!("function {other:?} not defined")),
        })
    }

    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "invalid",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_i64() || n.is_u64() => "int",
            Value::Number(_) => "float64",
            Value::String(_) => "string",
            Value::Array(_) => "slice",
            Value::Object(_) => "map",
        }
    }

    /// `semverCompare ">=1.19-0" .Capabilities.KubeVersion.GitVersion`: Helm's constraints
    /// (see `helm::repo::Constraint`); a version that does not parse matches nothing.
    fn semver_compare(constraint: &str, version: &str) -> bool {
        let constraint = crate::helm::repo::Constraint::parse(constraint);
        match (constraint, crate::helm::repo::Version::parse(version)) {
            (Ok(constraint), Some(version)) => constraint.matches(&version),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, data: Value) -> String {
        let mut templates = Templates::new();
        templates.add("t", source).unwrap();
        templates.render("t", &data).unwrap()
    }

    #[test]
    fn text_actions_and_trimming() {
        assert_eq!(render("a {{ .x }} b", json!({"x": 1})), "a 1 b");
        assert_eq!(render("a  {{- .x -}}  \n b", json!({"x": "y"})), "ayb");
        assert_eq!(render("{{/* a comment */}}x", json!({})), "x");
        assert_eq!(render("{{ .missing }}|{{ .a.b.c }}", json!({"a": {}})), "|");
        assert_eq!(
            render("{{ 1.5 }} {{ 3 }} {{ true }}", json!({})),
            "1.5 3 true"
        );
    }

    #[test]
    fn control_structures() {
        let data =
            json!({"on": true, "off": false, "items": ["a", "b", "c"], "m": {"k2": 2, "k1": 1}});
        assert_eq!(
            render("{{ if .on }}yes{{ else }}no{{ end }}", data.clone()),
            "yes"
        );
        assert_eq!(
            render(
                "{{ if .off }}1{{ else if .on }}2{{ else }}3{{ end }}",
                data.clone()
            ),
            "2"
        );
        assert_eq!(render("{{ with .m }}{{ .k1 }}{{ end }}", data.clone()), "1");
        assert_eq!(
            render("{{ with .nothing }}x{{ else }}none{{ end }}", data.clone()),
            "none"
        );
        assert_eq!(
            render("{{ range .items }}[{{ . }}]{{ end }}", data.clone()),
            "[a][b][c]"
        );
        assert_eq!(
            render(
                "{{ range $i, $v := .items }}{{ $i }}={{ $v }} {{ end }}",
                data.clone()
            ),
            "0=a 1=b 2=c "
        );
        assert_eq!(
            render(
                "{{ range $k, $v := .m }}{{ $k }}:{{ $v }};{{ end }}",
                data.clone()
            ),
            "k1:1;k2:2;"
        );
        assert_eq!(
            render(
                "{{ range .items }}{{ if eq . \"b\" }}{{ break }}{{ end }}{{ . }}{{ end }}",
                data.clone()
            ),
            "a"
        );
        assert_eq!(
            render("{{ range .none }}x{{ else }}empty{{ end }}", data.clone()),
            "empty"
        );
        assert_eq!(
            render(
                "{{ $x := 1 }}{{ if .on }}{{ $x = 2 }}{{ end }}{{ $x }}",
                data.clone()
            ),
            "2"
        );
        assert_eq!(
            render("{{ range .items }}{{ $.on }}{{ end }}", data),
            "truetruetrue"
        );
    }

    #[test]
    fn pipelines_and_functions() {
        let data = json!({"name": "my-release-name-that-is-much-too-long-for-a-kubernetes-object-name-really", "n": 3, "tags": {"a": "b"}});
        assert_eq!(
            render("{{ .name | trunc 10 | trimSuffix \"-\" }}", data.clone()),
            "my-release"
        );
        assert_eq!(
            render(
                "{{ default \"x\" .nothing }}|{{ .n | default 5 }}",
                data.clone()
            ),
            "x|3"
        );
        assert_eq!(
            render("{{ printf \"%s-%d\" \"a\" 7 }}", data.clone()),
            "a-7"
        );
        assert_eq!(render("{{ quote \"a\\\"b\" }}", data.clone()), "\"a\\\"b\"");
        assert_eq!(
            render(
                "{{ and 1 0 }} {{ or 0 \"\" 2 }} {{ not false }}",
                data.clone()
            ),
            "0 2 true"
        );
        assert_eq!(
            render("{{ len .tags }} {{ index .tags \"a\" }}", data.clone()),
            "1 b"
        );
        assert_eq!(
            render("x:{{- toYaml .tags | nindent 2 }}", data.clone()),
            "x:\n  a: b"
        );
        assert_eq!(
            render(
                "{{ (dict \"k\" \"v\").k }} {{ list 1 2 | len }}",
                data.clone()
            ),
            "v 2"
        );
        assert_eq!(
            render("{{ semverCompare \">=1.19-0\" \"v1.30.2\" }}", data.clone()),
            "true"
        );
        assert_eq!(
            render("{{ \"a+b\" | replace \"+\" \"_\" }}", data.clone()),
            "a_b"
        );
        let mut templates = Templates::new();
        templates
            .add("t", "{{ required \"set image\" .image }}")
            .unwrap();
        let error = templates.render("t", &json!({})).unwrap_err();
        assert!(error.message.contains("set image"), "{error}");
        assert!(Templates::new().add("t", "{{ if .x }}").is_err());
        assert!(Templates::new().add("t", "{{ .x ").is_err());
        let mut templates = Templates::new();
        templates.add("t", "{{ nosuchfunc 1 }}").unwrap();
        assert!(templates.render("t", &json!({})).is_err());
    }

    /// `_helpers.tpl` (as `helm create-chart` writes it) and the head of `deployment.yaml` as
    /// `helm create` writes them.
    #[test]
    fn helm_create_helpers() {
        let helpers = crate::helm::create::chart_files("web", None)
            .into_iter()
            .find(|f| f.path == "templates/_helpers.tpl")
            .unwrap()
            .content;
        let helpers = helpers.as_str();
        let deployment = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "web.fullname" . }}
  labels:
    {{- include "web.labels" . | nindent 4 }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  template:
    spec:
      containers:
        - name: {{ .Chart.Name }}
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
          ports:
            - name: http
              containerPort: {{ .Values.service.port }}
          {{- with .Values.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
"#;
        let mut templates = Templates::new();
        templates
            .add("web/templates/_helpers.tpl", helpers)
            .unwrap();
        templates
            .add("web/templates/deployment.yaml", deployment)
            .unwrap();
        let data = json!({
            "Chart": {"Name": "web", "Version": "0.1.0", "AppVersion": "1.16.0"},
            "Release": {"Name": "prod", "Service": "Helm"},
            "Values": {
                "replicaCount": 2,
                "autoscaling": {"enabled": false},
                "image": {"repository": "nginx", "tag": ""},
                "service": {"port": 80},
                "resources": {"limits": {"cpu": "500m"}}
            }
        });
        let out = templates
            .render("web/templates/deployment.yaml", &data)
            .unwrap();
        assert_eq!(
            out,
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: prod-web
  labels:
    helm.sh/chart: web-0.1.0
    app.kubernetes.io/name: web
    app.kubernetes.io/instance: prod
    app.kubernetes.io/version: "1.16.0"
    app.kubernetes.io/managed-by: Helm
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: web
          image: "nginx:1.16.0"
          ports:
            - name: http
              containerPort: 80
          resources:
            limits:
              cpu: 500m
"#
        );
    }
}
