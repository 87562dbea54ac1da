//! What parsing a `data.pkl` would build, found before it is built: a walk over the pickle's opcodes that keeps,
//! instead of objects, each object's size and nesting depth.
//!
//! candle's pickle reader (the one that rebuilds a state dict) copies an object each time the pickle fetches it
//! from its memo, and nests containers as deep as the pickle says. A few bytes can therefore ask for memory that
//! doubles with every fetch (`h0 h0 TUPLE2 q0`, repeated) or for a million levels of nesting. A state dict's pickle
//! builds roughly one object per opcode, a few levels deep; [`check`] refuses a pickle that would build more than
//! [`OBJECTS_PER_BYTE`] objects per byte or nest deeper than [`MAX_DEPTH`], so that reading a checkpoint allocates
//! at most a small multiple of its size.

/// Objects the parse may hold at once, per byte of pickle. Fetching a memoised class or storage name (2 bytes) is
/// what torch's pickles repeat; it copies an object of a few nodes.
pub const OBJECTS_PER_BYTE: u64 = 4;
/// The deepest nesting accepted. A state dict nests five levels at most (dict → rebuild call → arguments →
/// storage tuple → its strings); a training checkpoint with optimizer state adds a few.
pub const MAX_DEPTH: u32 = 64;
/// The most objects on the stack at once. Pickle writes containers' items in batches of 1,000 (APPENDS, SETITEMS),
/// so a state dict's stack stays in the low thousands.
pub const MAX_STACK: usize = 1 << 16;

/// An object the walk stands in for: how many nodes it holds (its bytes count as one node per 16), how deep it
/// nests, and whether it is a MARK.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Shadow {
    nodes: u64,
    depth: u32,
    mark: bool,
}

impl Shadow {
    const LEAF: Shadow = Shadow {
        nodes: 1,
        depth: 0,
        mark: false,
    };
    const MARK: Shadow = Shadow {
        nodes: 1,
        depth: 0,
        mark: true,
    };

    fn bytes(n: u64) -> Shadow {
        Shadow {
            nodes: 1 + n / 16,
            ..Shadow::LEAF
        }
    }

    /// A container holding `items`.
    fn holding(items: &[Shadow]) -> Shadow {
        Shadow {
            nodes: items.iter().fold(1, |n, s| n.saturating_add(s.nodes)),
            depth: 1 + items.iter().map(|s| s.depth).max().unwrap_or(0),
            mark: false,
        }
    }

    /// This container after `items` were added to it.
    fn extended(self, items: &[Shadow]) -> Shadow {
        let added = Shadow::holding(items);
        Shadow {
            nodes: self.nodes.saturating_add(added.nodes - 1),
            depth: self.depth.max(added.depth),
            mark: false,
        }
    }
}

/// The walk's state: the shadow stack and memo, and the nodes they hold together.
struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
    stack: Vec<Shadow>,
    memo: std::collections::HashMap<u32, Shadow>,
    live: u64,
    budget: u64,
}

/// Refuses a pickle whose parse would hold more than [`OBJECTS_PER_BYTE`] objects per byte or nest deeper than
/// [`MAX_DEPTH`] or stack more than [`MAX_STACK`] objects, and one this walk cannot follow (an opcode candle's reader does not know, a stack that runs out,
/// a truncated argument), which candle's reader would refuse as well.
pub fn check(pickle: &[u8]) -> Result<(), String> {
    let budget = (pickle.len() as u64).saturating_mul(OBJECTS_PER_BYTE);
    walk(pickle, budget).map_err(|(stop, at)| match stop {
        Stop::Unreadable => format!("malformed pickle in `data.pkl` (at byte {at})"),
        Stop::TooLarge => format!(
            "`data.pkl` would build more than {budget} objects from its {} bytes (it copies what it stores, \
             over and over); a state dict builds about one per byte",
            pickle.len()
        ),
        Stop::TooDeep => format!(
            "`data.pkl` nests containers more than {MAX_DEPTH} levels deep; a state dict nests a few"
        ),
        Stop::TooTall => format!(
            "`data.pkl` stacks more than {MAX_STACK} objects at once; pickle writes containers in batches of 1,000"
        ),
    })
}

/// Walks `pickle` holding at most `budget` nodes; where it stopped, and why.
fn walk(pickle: &[u8], budget: u64) -> Result<(), (Stop, usize)> {
    let mut walk = Walk {
        bytes: pickle,
        at: 0,
        stack: Vec::new(),
        memo: std::collections::HashMap::new(),
        live: 0,
        budget,
    };
    walk.run().map_err(|stop| (stop, walk.at))
}

#[derive(Debug, PartialEq)]
enum Stop {
    Unreadable,
    TooLarge,
    TooDeep,
    TooTall,
}

impl Walk<'_> {
    fn run(&mut self) -> Result<(), Stop> {
        loop {
            let op = self.take(1)?[0];
            match op {
                b'.' => return Ok(()),
                0x80 => drop(self.take(1)?),
                b'K' => {
                    self.take(1)?;
                    self.push(Shadow::LEAF)?
                }
                b'M' => {
                    self.take(2)?;
                    self.push(Shadow::LEAF)?
                }
                b'J' => {
                    self.take(4)?;
                    self.push(Shadow::LEAF)?
                }
                b'G' => {
                    self.take(8)?;
                    self.push(Shadow::LEAF)?
                }
                0x8a => {
                    let n = self.take(1)?[0] as usize;
                    self.take(n)?;
                    self.push(Shadow::LEAF)?
                }
                b'X' => {
                    let n = self.u32()?;
                    self.take(n as usize)?;
                    self.push(Shadow::bytes(n as u64))?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Shadow::bytes((module + name) as u64))?
                }
                b')' | b'N' | 0x88 | 0x89 | b'}' | b']' => self.push(Shadow::LEAF)?,
                b'(' => self.push(Shadow::MARK)?,
                b'q' => {
                    let id = self.take(1)?[0] as u32;
                    self.memo_put(id)?
                }
                b'r' => {
                    let id = self.u32()?;
                    self.memo_put(id)?
                }
                b'h' => {
                    let id = self.take(1)?[0] as u32;
                    self.memo_get(id)?
                }
                b'j' => {
                    let id = self.u32()?;
                    self.memo_get(id)?
                }
                b'Q' => self.build(1)?,
                0x85 => self.build(1)?,
                0x86 | b'R' | 0x81 | b'b' => self.build(2)?,
                0x87 => self.build(3)?,
                b't' | b'd' => {
                    let items = self.pop_to_mark()?;
                    self.push(Shadow::holding(&items))?
                }
                b'a' => self.extend(1)?,
                b's' => self.extend(2)?,
                b'e' | b'u' => {
                    let items = self.pop_to_mark()?;
                    self.extend_with(&items)?
                }
                _ => return Err(Stop::Unreadable),
            }
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Stop> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(Stop::Unreadable)?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, Stop> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A newline-terminated argument (GLOBAL's module and name); its length.
    fn line(&mut self) -> Result<usize, Stop> {
        let rest = &self.bytes[self.at..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(Stop::Unreadable)?;
        self.at += n + 1;
        Ok(n)
    }

    fn charge(&mut self, nodes: u64) -> Result<(), Stop> {
        self.live = self.live.saturating_add(nodes);
        if self.live > self.budget {
            return Err(Stop::TooLarge);
        }
        Ok(())
    }

    fn push(&mut self, s: Shadow) -> Result<(), Stop> {
        if s.depth > MAX_DEPTH {
            return Err(Stop::TooDeep);
        }
        if self.stack.len() == MAX_STACK {
            return Err(Stop::TooTall);
        }
        self.charge(s.nodes)?;
        self.stack.push(s);
        Ok(())
    }

    /// Pops `n` objects and pushes one holding them (a tuple, a call and its arguments, a persistent id).
    fn build(&mut self, n: usize) -> Result<(), Stop> {
        let at = self.stack.len().checked_sub(n).ok_or(Stop::Unreadable)?;
        let items = self.stack.split_off(at);
        // The items move into the new object: only its own node is new.
        self.live -= items.iter().map(|s| s.nodes).sum::<u64>().min(self.live);
        self.push(Shadow::holding(&items))
    }

    /// Pops `n` objects and adds them to the container below them (APPEND, SETITEM).
    fn extend(&mut self, n: usize) -> Result<(), Stop> {
        let at = self.stack.len().checked_sub(n).ok_or(Stop::Unreadable)?;
        let items = self.stack.split_off(at);
        self.extend_with(&items)
    }

    fn extend_with(&mut self, items: &[Shadow]) -> Result<(), Stop> {
        let target = self.stack.pop().ok_or(Stop::Unreadable)?;
        if target.mark {
            return Err(Stop::Unreadable);
        }
        let moved: u64 = items
            .iter()
            .map(|s| s.nodes)
            .fold(target.nodes, u64::saturating_add);
        self.live -= moved.min(self.live);
        self.push(target.extended(items))
    }

    fn pop_to_mark(&mut self) -> Result<Vec<Shadow>, Stop> {
        let mark = self
            .stack
            .iter()
            .rposition(|s| s.mark)
            .ok_or(Stop::Unreadable)?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        let moved: u64 = items.iter().map(|s| s.nodes).fold(1, u64::saturating_add);
        self.live -= moved.min(self.live);
        Ok(items)
    }

    /// MEMO_PUT keeps a copy of the top of the stack.
    fn memo_put(&mut self, id: u32) -> Result<(), Stop> {
        let top = *self.stack.last().ok_or(Stop::Unreadable)?;
        self.charge(top.nodes)?;
        if let Some(old) = self.memo.insert(id, top) {
            self.live -= old.nodes.min(self.live);
        }
        Ok(())
    }

    /// MEMO_GET pushes a copy of what was kept.
    fn memo_get(&mut self, id: u32) -> Result<(), Stop> {
        let kept = *self.memo.get(&id).ok_or(Stop::Unreadable)?;
        self.push(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pickle_that_doubles_what_it_copies_is_refused_after_a_bounded_walk() {
        // EMPTY_LIST PUT0, then 60 × (GET0 GET0 TUPLE2 PUT0 POP…): 2^60 nodes from 400 bytes.
        let mut pickle = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..60 {
            pickle.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        pickle.push(b'.');
        let err = check(&pickle).unwrap_err();
        assert!(err.contains("would build more than"), "{err}");
        // Every truncation of it stops the walk somewhere, and none panics.
        for n in 0..pickle.len() {
            assert!(check(&pickle[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused_and_within_it_accepted() {
        let nested = |depth: usize| {
            let mut pickle = vec![0x80, 2];
            pickle.extend(std::iter::repeat_n(b']', depth));
            pickle.extend(std::iter::repeat_n(b'a', depth - 1));
            pickle.push(b'.');
            pickle
        };
        assert_eq!(check(&nested(MAX_DEPTH as usize)), Ok(()));
        let err = check(&nested(MAX_DEPTH as usize + 2)).unwrap_err();
        assert!(err.contains("levels deep"), "{err}");
        let err = check(&nested(MAX_STACK + 1)).unwrap_err();
        assert!(err.contains("stacks more than"), "{err}");
    }

    #[test]
    fn a_torchvision_state_dict_is_well_within_the_budget() {
        let pth = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/data/weights/resnet18-w4.pth"),
        )
        .unwrap();
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(pth)).unwrap();
        let mut pickle = Vec::new();
        std::io::Read::read_to_end(
            &mut zip.by_name("resnet18-w4/data.pkl").unwrap(),
            &mut pickle,
        )
        .unwrap();
        assert_eq!(check(&pickle), Ok(()));
        // It builds less than one object per byte: a quarter of the budget is enough.
        assert_eq!(
            walk(&pickle, pickle.len() as u64 * OBJECTS_PER_BYTE / 4),
            Ok(())
        );
    }
}
