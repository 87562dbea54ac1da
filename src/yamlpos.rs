//! Where each value of a YAML document stands: a map from a node's path (mapping keys and sequence indices) to its
//! line and column, so that errors found after deserialisation can still point into the file.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// A serde_yaml error as its position and a message for people: without the " at line L column C" serde_yaml and
/// libyaml insert (we print the position ourselves), and with the syntax errors people make most said plainly.
pub fn split_serde_error(e: &serde_yaml::Error) -> (Option<Pos>, String) {
    let pos = e.location().map(|l| Pos {
        line: l.line(),
        column: l.column(),
    });
    (pos, plain_message(&e.to_string()))
}

fn plain_message(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    // Drop every " at line L column C".
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + " at line ".len()..];
        let skip = tail.find(" column ").map(|c| {
            c + " column ".len()
                + tail[c + " column ".len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .count()
        });
        rest = skip.map_or("", |s| &tail[s..]);
    }
    out.push_str(rest);
    if out.contains("while parsing a flow sequence") {
        return "a `[` list is not closed: expected `,` or `]`".into();
    }
    if out.contains("while parsing a flow mapping") {
        return "a `{` mapping is not closed: expected `,` or `}`".into();
    }
    if out.contains("expected a Value::Tagged enum") {
        return out.replace(
            "expected a Value::Tagged enum",
            "expected one of the setting's names",
        );
    }
    out
}

/// Positions of every node in the first document of a YAML text, keyed by path, and the first mapping key given
/// twice (YAML forbids it; serde keeps the last value silently).
#[derive(Debug, Default)]
pub struct PosIndex {
    positions: HashMap<Vec<String>, Pos>,
    pub duplicate: Option<Duplicate>,
    /// Where nesting first goes deeper than [`MAX_DEPTH`]: indexing stops there, so a deep text costs linear time.
    pub too_deep: Option<Pos>,
    /// Where the text stops being YAML, and why (an unclosed `[`, a tab in indentation): serde_yaml can report a
    /// value of the wrong type before it reaches the syntax error, which would mislead.
    pub syntax: Option<(Pos, String)>,
}

/// The deepest nesting of mappings and sequences a spec, lock or paper.yaml may have (theirs is under 10).
pub const MAX_DEPTH: usize = 64;

/// What a file nested deeper than [`MAX_DEPTH`] is told.
pub fn too_deep_message() -> String {
    format!("nested deeper than {MAX_DEPTH} levels")
}

/// A mapping key that appears twice: the mapping's path, the key, and where it appears the second time.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    pub mapping: Vec<String>,
    pub key: String,
    pub pos: Pos,
}

impl PosIndex {
    /// Indexes `text`. A text that does not parse yields an empty index (serde_yaml reports the syntax error).
    pub fn new(text: &str) -> Self {
        if let Some(pos) = too_deep(text) {
            return Self {
                too_deep: Some(pos),
                ..Self::default()
            };
        }
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if let Err(e) = parser.load(&mut builder, false) {
            let pos = Pos {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            };
            return Self {
                syntax: Some((pos, plain_message(&format!("not valid YAML: {}", e.info())))),
                ..Self::default()
            };
        }
        Self {
            positions: builder.positions,
            duplicate: builder.duplicate,
            too_deep: builder.too_deep,
            syntax: None,
        }
    }

    /// The position of the node at `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &[String]) -> Option<Pos> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.positions.get(&path[..n]).copied())
    }
}

/// Where `text` first nests deeper than [`MAX_DEPTH`], found in one pass before any YAML parser sees it (theirs
/// take time quadratic in the depth): flow collections by their brackets outside quotes and comments, block
/// collections by the indentation of each line and the `- ` that open sequences on it.
fn too_deep(text: &str) -> Option<Pos> {
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let content = line.trim_start_matches(' ');
        if flow == 0 && !content.is_empty() && !content.starts_with('#') {
            let indent = line.len() - content.len();
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            let dashes = content
                .as_bytes()
                .chunks(2)
                .take_while(|c| c == b"- ")
                .count();
            if indents.len() + dashes > MAX_DEPTH {
                return Some(Pos {
                    line: n + 1,
                    column: indent + 1,
                });
            }
        }
        let mut quote: Option<char> = None;
        for (col, c) in line.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '#') if col == 0 || line[..col].ends_with(' ') => break,
                (None, '[' | '{') => {
                    flow += 1;
                    if flow + indents.len() > MAX_DEPTH {
                        return Some(Pos {
                            line: n + 1,
                            column: col + 1,
                        });
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

enum Frame {
    Map {
        key: Option<String>,
        seen: std::collections::HashSet<String>,
    },
    Seq {
        index: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    path: Vec<String>,
    positions: HashMap<Vec<String>, Pos>,
    duplicate: Option<Duplicate>,
    too_deep: Option<Pos>,
    done: bool,
}

impl Builder {
    /// Called for a node that is a value (not a mapping key): records its position and returns whether it was one.
    fn enter_value(&mut self, mark: Marker) -> bool {
        let segment = match self.stack.last_mut() {
            None => None,
            Some(Frame::Map { key, .. }) => match key.take() {
                Some(k) => Some(k),
                None => return false,
            },
            Some(Frame::Seq { index }) => {
                *index += 1;
                Some((*index - 1).to_string())
            }
        };
        if let Some(s) = segment {
            self.path.push(s);
        }
        self.positions.insert(
            self.path.clone(),
            Pos {
                line: mark.line(),
                column: mark.col() + 1,
            },
        );
        true
    }

    fn leave_value(&mut self) {
        if !self.stack.is_empty() {
            self.path.pop();
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        match ev {
            Event::Scalar(text, ..) => {
                if self.enter_value(mark) {
                    self.leave_value();
                } else if let Some(Frame::Map { key, seen }) = self.stack.last_mut() {
                    if !seen.insert(text.clone()) && self.duplicate.is_none() {
                        self.duplicate = Some(Duplicate {
                            mapping: self.path.clone(),
                            key: text.clone(),
                            pos: Pos {
                                line: mark.line(),
                                column: mark.col() + 1,
                            },
                        });
                    }
                    *key = Some(text);
                }
            }
            Event::Alias(_) if self.enter_value(mark) => self.leave_value(),
            Event::MappingStart(..) | Event::SequenceStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.too_deep = Some(Pos {
                    line: mark.line(),
                    column: mark.col() + 1,
                });
                self.done = true;
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A complex mapping key is not a path segment we can name; index it under an empty key.
                if !self.enter_value(mark) {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(String::new());
                    }
                    self.enter_value(mark);
                }
                let frame = match ev {
                    Event::MappingStart(..) => Frame::Map {
                        key: None,
                        seen: Default::default(),
                    },
                    _ => Frame::Seq { index: 0 },
                };
                self.stack.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.leave_value();
            }
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nesting_beyond_the_limit_is_found_in_one_pass_with_its_line() {
        let flow = format!("a: 1\nb: {}{}\n", "[".repeat(200_000), "]".repeat(200_000));
        let started = std::time::Instant::now();
        let index = PosIndex::new(&flow);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(index.too_deep.map(|p| p.line), Some(2));
        let block: String = (0..100)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(
            PosIndex::new(&block).too_deep.map(|p| p.line),
            Some(MAX_DEPTH + 1)
        );
        let dashes = format!("a:\n  {}x\n", "- ".repeat(100));
        assert_eq!(PosIndex::new(&dashes).too_deep.map(|p| p.line), Some(2));
        // Brackets in quotes and comments do not nest; real files pass.
        let quoted = format!(
            "a: '{}' # {}\nb: [1, [2]]\n",
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(PosIndex::new(&quoted).too_deep.is_none());
    }

    use super::*;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_nested_values_and_sequence_items() {
        let text = "name: x\nbase:\n  model:\n    gamma: -1\ngrid:\n  model.gamma: [0.1, 2]\n  train.lr:\n    - 1\n    - 2\n";
        let idx = PosIndex::new(text);
        assert_eq!(
            idx.find(&path(&["base", "model", "gamma"])),
            Some(Pos {
                line: 4,
                column: 12
            })
        );
        assert_eq!(
            idx.find(&path(&["grid", "model.gamma", "1"])),
            Some(Pos {
                line: 6,
                column: 22
            })
        );
        assert_eq!(
            idx.find(&path(&["grid", "train.lr", "1"])).map(|p| p.line),
            Some(9)
        );
    }

    #[test]
    fn finds_the_second_occurrence_of_a_duplicate_key() {
        let idx = PosIndex::new(
            "base:\n  model: {a: 1}\n  train: {}\n  model: {b: 2}\ngrid: {x: [1], y: [2]}\n",
        );
        let d = idx.duplicate.unwrap();
        assert_eq!(
            (d.mapping, d.key.as_str(), d.pos.line),
            (path(&["base"]), "model", 4)
        );
        assert!(
            PosIndex::new("a: {x: 1}\nb: {x: 1}\n").duplicate.is_none(),
            "same key in two mappings"
        );
    }

    #[test]
    fn syntax_errors_read_plainly() {
        let e = serde_yaml::from_str::<serde_yaml::Value>("a: [b, c\nd: 1\n").unwrap_err();
        let (pos, message) = split_serde_error(&e);
        assert!(pos.is_some());
        assert_eq!(message, "a `[` list is not closed: expected `,` or `]`");
        assert!(!plain_message("x at line 3 column 14, y at line 2 column 1").contains("line"));
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let idx = PosIndex::new("base:\n  model: {}\n");
        assert_eq!(
            idx.find(&path(&["base", "model", "gamma"])).map(|p| p.line),
            Some(2)
        );
    }
}
