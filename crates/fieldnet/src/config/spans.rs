//! Maps between key paths (`networks[1].subnet`) and places in the TOML text.
//!
//! Validation speaks in key paths; operators want `file:line`. This module owns that translation,
//! using the spanned document toml parses, so the wire types stay plain serde structs.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A dotted key path such as `peers[0].paths[1].local`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.0.clone();
        next.push(Segment::Key(key.to_owned()));
        Self(next)
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.0.clone();
        next.push(Segment::Index(index));
        Self(next)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for segment in &self.0 {
            match segment {
                Segment::Key(key) if first => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
            first = false;
        }
        if first {
            write!(f, "(top level)")?;
        }
        Ok(())
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The span of the value at `path`, or of its nearest existing ancestor.
///
/// A missing key reports the table that should have held it, which is where the operator must
/// add it.
pub fn span_of(document: &Spanned<DeTable<'_>>, path: &KeyPath) -> Range<usize> {
    let mut best = 0..0;
    let mut table = Some(document.get_ref());
    let mut array: Option<&toml::de::DeArray<'_>> = None;
    for segment in &path.0 {
        let value = match segment {
            Segment::Key(key) => match table.and_then(|t| t.get(key.as_str())) {
                Some(value) => value,
                None => break,
            },
            Segment::Index(index) => match array.and_then(|a| a.get(*index)) {
                Some(value) => value,
                None => break,
            },
        };
        best = value.span();
        table = value.get_ref().as_table();
        array = value.get_ref().as_array();
    }
    best
}

/// The deepest key path whose key or value contains `offset`.
///
/// Table spans cover only their `[header]`, not their body, so every branch is searched rather
/// than pruned by span.
pub fn key_at(document: &Spanned<DeTable<'_>>, offset: usize) -> KeyPath {
    fn in_table(table: &DeTable<'_>, offset: usize, path: &KeyPath) -> Option<KeyPath> {
        for (key, value) in table.iter() {
            let here = path.key(key.get_ref());
            if let Some(deeper) = in_value(value.get_ref(), offset, &here) {
                return Some(deeper);
            }
            if key.span().contains(&offset) || value.span().contains(&offset) {
                return Some(here);
            }
        }
        None
    }
    fn in_value(value: &DeValue<'_>, offset: usize, path: &KeyPath) -> Option<KeyPath> {
        match value {
            DeValue::Table(table) => in_table(table, offset, path),
            DeValue::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
                let here = path.index(index);
                in_value(item.get_ref(), offset, &here)
                    .or_else(|| item.span().contains(&offset).then_some(here))
            }),
            _ => None,
        }
    }
    in_table(document.get_ref(), offset, &KeyPath::root()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[site]\nname = \"x\"\n\n[[networks]]\nname = \"A\"\n\n[[networks]]\nname = \"B\"\nsubnet = \"10.0.0.0/24\"\n";

    #[test]
    fn span_of_finds_nested_array_keys() {
        let document = DeTable::parse(TEXT).unwrap();
        let path = KeyPath::root().key("networks").index(1).key("subnet");
        let span = span_of(&document, &path);
        assert_eq!(line_of(TEXT, span.start), 9);
        assert_eq!(path.to_string(), "networks[1].subnet");
    }

    #[test]
    fn span_of_missing_key_points_at_its_table() {
        let document = DeTable::parse(TEXT).unwrap();
        let path = KeyPath::root().key("networks").index(0).key("gateway");
        assert_eq!(line_of(TEXT, span_of(&document, &path).start), 4);
    }

    #[test]
    fn key_at_names_the_value_under_an_offset() {
        let document = DeTable::parse(TEXT).unwrap();
        let offset = TEXT.find("10.0.0.0").unwrap();
        assert_eq!(key_at(&document, offset).to_string(), "networks[1].subnet");
        assert_eq!(key_at(&document, 0).to_string(), "site");
        assert_eq!(KeyPath::root().to_string(), "(top level)");
    }
}
