//! Slots for the objects a backend hands out as small ids (connections, listeners):
//! reused through a free list, with a generation per slot so that an id used after its
//! object was closed is detected instead of reaching another object.
//!
//! Index and generation are `u32` by default; the fabric backend uses `u16` ones, which
//! pack into the 32-bit id its messages carry ([`Id::pack`]).

/// The integer type of a slot's index and generation (`u16` or `u32`).
pub(crate) trait SlotInt: Copy + Eq {
    /// Zero, the first generation.
    const ZERO: Self;
    /// `i` if it fits.
    fn from_usize(i: usize) -> Option<Self>;
    /// As an index into the slots.
    fn to_usize(self) -> usize;
    /// The next generation, wrapping around.
    fn bump(self) -> Self;
}

macro_rules! slot_int {
    ($t:ty) => {
        impl SlotInt for $t {
            const ZERO: Self = 0;
            fn from_usize(i: usize) -> Option<Self> {
                <$t>::try_from(i).ok()
            }
            fn to_usize(self) -> usize {
                self as usize
            }
            fn bump(self) -> Self {
                self.wrapping_add(1)
            }
        }
    };
}
slot_int!(u16);
slot_int!(u32);

/// Index and generation of a slot in a [`Slab`]; the generation makes stale ids detectable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Id<I = u32> {
    index: I,
    gen: I,
}

impl<I: SlotInt> Id<I> {
    /// The slot's index (the same for every generation of the slot).
    pub(crate) fn index(self) -> I {
        self.index
    }
}

impl Id<u16> {
    /// The id as one `u32` (`gen << 16 | index`), for a message header.
    pub(crate) fn pack(self) -> u32 {
        (u32::from(self.gen) << 16) | u32::from(self.index)
    }

    /// The id [`pack`](Id::pack) made `v` of.
    pub(crate) fn unpack(v: u32) -> Self {
        Id {
            index: (v & 0xffff) as u16,
            gen: (v >> 16) as u16,
        }
    }
}

/// Slots reused through a free list; removing bumps the slot's generation.
pub(crate) struct Slab<T, I = u32> {
    slots: Vec<(I, Option<T>)>,
    free: Vec<I>,
}

impl<T, I: SlotInt> Slab<T, I> {
    pub(crate) fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Inserts `v`; `None` when every index of `I` is in use.
    pub(crate) fn try_insert(&mut self, v: T) -> Option<Id<I>> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = I::from_usize(self.slots.len())?;
                self.slots.push((I::ZERO, None));
                index
            }
        };
        Some(self.fill(index, v))
    }

    /// Puts `v` in the empty slot `index`.
    fn fill(&mut self, index: I, v: T) -> Id<I> {
        let slot = &mut self.slots[index.to_usize()];
        slot.1 = Some(v);
        Id { index, gen: slot.0 }
    }

    pub(crate) fn get(&self, id: Id<I>) -> Option<&T> {
        match self.slots.get(id.index.to_usize()) {
            Some((gen, Some(v))) if *gen == id.gen => Some(v),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, id: Id<I>) -> Option<&mut T> {
        match self.slots.get_mut(id.index.to_usize()) {
            Some((gen, Some(v))) if *gen == id.gen => Some(v),
            _ => None,
        }
    }

    /// The live entry at `index`, whatever its generation.
    pub(crate) fn at_mut(&mut self, index: I) -> Option<(Id<I>, &mut T)> {
        match self.slots.get_mut(index.to_usize()) {
            Some((gen, Some(v))) => Some((Id { index, gen: *gen }, v)),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, id: Id<I>) -> Option<T> {
        let slot = self.slots.get_mut(id.index.to_usize())?;
        if slot.0 != id.gen || slot.1.is_none() {
            return None;
        }
        slot.0 = slot.0.bump();
        self.free.push(id.index);
        slot.1.take()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|(_, v)| v.as_ref())
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().filter_map(|(_, v)| v.as_mut())
    }
}

impl<T> Slab<T> {
    /// Inserts `v` (a `u32` index: four billion live entries are out of reach).
    pub(crate) fn insert(&mut self, v: T) -> Id {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push((0, None));
            (self.slots.len() - 1) as u32
        });
        self.fill(index, v)
    }
}
