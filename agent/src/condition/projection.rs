//! What a condition reads of each value ([`Projection`]): the members its paths name, so that
//! only those are captured, or read directly, before it is evaluated. Its own module so that
//! the readers of values (the capture's serializer, the direct path reader) can name it without
//! depending on the compiler.

/// The parts of a value an expression reads: `order.total_cents > 1` reads one field of
/// `order`, so only that field is captured before the condition is evaluated.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Projection {
    /// The value is used as a whole (passed to a function, compared, iterated...).
    whole: bool,
    members: Vec<(String, Projection)>,
}

impl Projection {
    pub(super) fn add_path(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.whole = true,
            Some((first, rest)) => {
                let index = match self.members.iter().position(|(name, _)| name == first) {
                    Some(index) => index,
                    None => {
                        self.members.push((first.clone(), Projection::default()));
                        self.members.len() - 1
                    }
                };
                self.members[index].1.add_path(rest);
            }
        }
    }

    pub(crate) fn is_whole(&self) -> bool {
        self.whole
    }

    /// The names of the members read, in the order the condition first reads them.
    pub(crate) fn member_names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(name, _)| name.as_str())
    }

    /// Where member `name` is among those read, if it is read.
    pub(crate) fn member_index(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|(member, _)| member == name)
    }

    pub(crate) fn member_at(&self, index: usize) -> Option<&Projection> {
        self.members.get(index).map(|(_, projection)| projection)
    }

    pub(crate) fn member(&self, name: &str) -> Option<&Projection> {
        self.members
            .iter()
            .find(|(member, _)| member == name)
            .map(|(_, projection)| projection)
    }
}
