//! What a condition reads of each value ([`Projection`]): the members its paths name, and what
//! it reads of each element of the collections it iterates, so that only those are captured,
//! or read directly, before it is evaluated. Its own module so that the readers of values (the
//! capture's serializer, the direct path reader) can name it without depending on the compiler.

/// One step of a path a condition reads from a point's field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PathStep {
    /// A member by name: `order.total` steps into `total`.
    Member(String),
    /// Every element of a collection the condition iterates: in `order.items.exists(i, i.qty
    /// > 1)`, `i.qty` reads `order` → `items` → each element → `qty`.
    Elements,
}

/// The parts of a value an expression reads: `order.total_cents > 1` reads one field of
/// `order`, so only that field is captured before the condition is evaluated;
/// `order.items.exists(i, i.qty > 1)` reads `qty` of each item, so each item is captured with
/// that member alone.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Projection {
    /// The value is used as a whole (passed to a function, compared, iterated into a value
    /// that leaves the comprehension...).
    whole: bool,
    members: Vec<(String, Projection)>,
    /// The value is iterated, and this is what is read of each element (for a map or struct,
    /// iteration visits its keys, so every entry is kept). `None`: not iterated by a
    /// comprehension whose variable the walk could follow.
    elements: Option<Box<Projection>>,
}

impl Projection {
    /// Records that the expression reads `path` of the value: used whole at its end when
    /// `whole`, otherwise only reached (a collection iterated, its elements read as other paths
    /// say).
    pub(super) fn add_path(&mut self, path: &[PathStep], whole: bool) {
        match path.split_first() {
            None => self.whole |= whole,
            Some((PathStep::Elements, rest)) => self
                .elements
                .get_or_insert_with(Box::default)
                .add_path(rest, whole),
            Some((PathStep::Member(first), rest)) => {
                let index = match self.members.iter().position(|(name, _)| name == first) {
                    Some(index) => index,
                    None => {
                        self.members.push((first.clone(), Projection::default()));
                        self.members.len() - 1
                    }
                };
                self.members[index].1.add_path(rest, whole);
            }
        }
    }

    pub(crate) fn is_whole(&self) -> bool {
        self.whole
    }

    /// What is read of each element when the value is iterated; `None` when it is not
    /// iterated (each element is then captured whole, if the value is captured as a list).
    pub(crate) fn elements(&self) -> Option<&Projection> {
        self.elements.as_deref()
    }

    /// Whether every entry of a map or struct is needed, whatever its name: iterating one
    /// visits all its keys.
    pub(crate) fn reads_every_entry(&self) -> bool {
        self.whole || self.elements.is_some()
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
