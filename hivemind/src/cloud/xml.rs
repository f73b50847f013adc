//! The XML of AWS query API answers as a tree of elements (names without namespace, text,
//! children), enough to read fields by path.

use quick_xml::Reader;
use quick_xml::events::Event;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The element at `path` (child names separated by `/`).
    pub fn at(&self, path: &str) -> Option<&Element> {
        path.split('/').try_fold(self, |e, name| e.child(name))
    }

    /// The text at `path`, when there is an element there.
    pub fn text_at(&self, path: &str) -> Option<String> {
        self.at(path).map(|e| e.text.trim().to_string())
    }

    /// The first element named `name` anywhere below (depth first).
    pub fn find(&self, name: &str) -> Option<&Element> {
        for child in &self.children {
            if child.name == name {
                return Some(child);
            }
            if let Some(found) = child.find(name) {
                return Some(found);
            }
        }
        None
    }
}

/// Parses a document into its root element.
pub fn parse(text: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = vec![Element::default()];
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                stack.push(Element {
                    name,
                    ..Default::default()
                });
            }
            Ok(Event::Empty(start)) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(Element {
                        name,
                        ..Default::default()
                    });
                }
            }
            Ok(Event::Text(text)) => {
                let text = text.decode().map_err(|e| e.to_string())?;
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&text);
                }
            }
            Ok(Event::GeneralRef(reference)) => {
                let name = reference.decode().map_err(|e| e.to_string())?;
                let resolved = match name.as_ref() {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    other => other
                        .strip_prefix("#x")
                        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                        .or_else(|| other.strip_prefix('#').and_then(|d| d.parse().ok()))
                        .and_then(char::from_u32),
                };
                let ch = resolved.ok_or_else(|| format!("unknown entity &{name};"))?;
                if let Some(current) = stack.last_mut() {
                    current.text.push(ch);
                }
            }
            Ok(Event::CData(data)) => {
                if let Some(current) = stack.last_mut() {
                    current
                        .text
                        .push_str(&String::from_utf8_lossy(&data.into_inner()));
                }
            }
            Ok(Event::End(_)) => {
                let done = stack.pop().ok_or("unbalanced XML")?;
                stack
                    .last_mut()
                    .ok_or("unbalanced XML")?
                    .children
                    .push(done);
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("not XML: {e}")),
        }
    }
    let mut root = stack.pop().ok_or("no XML")?;
    if !stack.is_empty() {
        return Err("the XML ends inside an element".to_string());
    }
    root.children
        .pop()
        .ok_or_else(|| "no XML element".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_by_path() {
        let doc = parse(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<RunInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <instancesSet><item><instanceId>i-1</instanceId><instanceState><name>pending</name></instanceState></item>
  <item><instanceId>i-2</instanceId><empty/></item></instancesSet>
  <note>a &amp; b &#x41;&#66;</note>
</RunInstancesResponse>"#,
        )
        .unwrap();
        assert_eq!(doc.name, "RunInstancesResponse");
        let items: Vec<_> = doc.at("instancesSet").unwrap().all("item").collect();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].text_at("instanceState/name").as_deref(),
            Some("pending")
        );
        assert_eq!(doc.text_at("note").as_deref(), Some("a & b AB"));
        assert_eq!(doc.find("instanceId").unwrap().text, "i-1");
        assert!(parse("<a><b></a>").is_err());
    }
}
