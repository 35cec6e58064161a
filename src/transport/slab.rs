//! Slots for the objects a backend hands out as small ids (connections, listeners):
//! reused through a free list, with a generation per slot so that an id used after its
//! object was closed is detected instead of reaching another object.

/// Index and generation of a slot in a [`Slab`]; the generation makes stale ids detectable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Id {
    index: u32,
    gen: u32,
}

/// Slots reused through a free list; removing bumps the slot's generation.
pub(crate) struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    pub(crate) fn insert(&mut self, v: T) -> Id {
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.1 = Some(v);
            return Id { index, gen: slot.0 };
        }
        self.slots.push((0, Some(v)));
        Id {
            index: (self.slots.len() - 1) as u32,
            gen: 0,
        }
    }

    pub(crate) fn get(&self, id: Id) -> Option<&T> {
        match self.slots.get(id.index as usize) {
            Some((gen, Some(v))) if *gen == id.gen => Some(v),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        match self.slots.get_mut(id.index as usize) {
            Some((gen, Some(v))) if *gen == id.gen => Some(v),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, id: Id) -> Option<T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.0 != id.gen || slot.1.is_none() {
            return None;
        }
        slot.0 = slot.0.wrapping_add(1);
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
