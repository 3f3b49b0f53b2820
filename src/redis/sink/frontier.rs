//! How far a sink that splits units over many independent batches has landed.
//!
//! A cluster target splits each unit into per-slot parts, and the parts land in many
//! slot batches, confirmed in any order. The position to report (and ACK to the source) is
//! the end of the last unit all of whose parts are confirmed.
//!
//! Each batch gets a ticket when it opens, in order. Batches open in the order of their
//! first units, so the oldest unconfirmed ticket holds the earliest unit not yet landed:
//! every unit before it is confirmed in every batch, because a batch holding part of an
//! earlier unit opened earlier. The landed position is the one recorded when that ticket
//! opened, or the last unit's end once no ticket is left. This costs one queue entry per
//! batch. A list of units per batch plus a count per unit cost random memory accesses per
//! command.

use std::collections::VecDeque;

/// The landed position of a stream of units split over batches; `P` is a position.
#[derive(Debug)]
pub struct Frontier<P> {
    tickets: VecDeque<Ticket<P>>,
    /// The ticket number of `tickets[0]`.
    base: u64,
    last_end: Option<P>,
}

#[derive(Debug)]
struct Ticket<P> {
    /// Where the unit that opened the batch started; `None` for the first unit.
    before: Option<P>,
    confirmed: bool,
}

impl<P> Default for Frontier<P> {
    fn default() -> Self {
        Frontier {
            tickets: VecDeque::new(),
            base: 0,
            last_end: None,
        }
    }
}

impl<P: Clone> Frontier<P> {
    /// A batch opens with a part of the unit being ended; returns its ticket. Call before
    /// [`Frontier::end_unit`] for that unit.
    pub fn open(&mut self) -> u64 {
        self.tickets.push_back(Ticket {
            before: self.last_end.clone(),
            confirmed: false,
        });
        self.base + self.tickets.len() as u64 - 1
    }

    /// The unit being ended (its parts queued) ends at `at`.
    pub fn end_unit(&mut self, at: P) {
        self.last_end = Some(at);
    }

    /// The batch of `ticket` is on the target.
    pub fn confirm(&mut self, ticket: u64) {
        let i = ticket
            .checked_sub(self.base)
            .expect("a ticket is confirmed once") as usize;
        self.tickets[i].confirmed = true;
        while self.tickets.front().is_some_and(|t| t.confirmed) {
            self.tickets.pop_front();
            self.base += 1;
        }
    }

    /// The end of the last unit whose every part is confirmed; `None` before the first.
    pub fn landed(&self) -> Option<&P> {
        match self.tickets.front() {
            Some(t) => t.before.as_ref(),
            None => self.last_end.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Units (their index is their position) each with parts in some of `slots` slots;
    /// a slot's open batch takes parts until it is sent; sent batches are confirmed in
    /// any order. After every step, `landed` must be exactly the last unit whose parts
    /// are all confirmed (brute force), and never move backwards.
    #[derive(Clone, Debug)]
    enum Step {
        /// A unit with parts in these slots.
        Unit(Vec<u8>),
        /// Send the open batch of this slot.
        Send(u8),
        /// Confirm the n-th sent batch still unconfirmed (modulo their number).
        Confirm(usize),
    }

    fn step(slots: u8) -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => prop::collection::vec(0..slots, 0..4).prop_map(Step::Unit),
            2 => (0..slots).prop_map(Step::Send),
            2 => any::<usize>().prop_map(Step::Confirm),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn landed_is_the_last_unit_confirmed_everywhere(
            steps in prop::collection::vec(step(5), 0..80),
        ) {
            let mut f = Frontier::<u64>::default();
            // Per slot, the open batch: (ticket, units in it).
            let mut open: Vec<Option<(u64, Vec<u64>)>> = vec![None; 5];
            // Sent, unconfirmed: (ticket, units).
            let mut sent: Vec<(u64, Vec<u64>)> = Vec::new();
            // Per unit, batches holding a part not yet confirmed.
            let mut pending: Vec<usize> = Vec::new();
            let mut last = None;
            for s in steps {
                match s {
                    Step::Unit(mut parts) => {
                        parts.sort();
                        parts.dedup();
                        let u = pending.len() as u64;
                        pending.push(parts.len());
                        for p in parts {
                            let batch = open[p as usize].get_or_insert_with(|| (f.open(), vec![]));
                            batch.1.push(u);
                        }
                        f.end_unit(u);
                    }
                    Step::Send(slot) => sent.extend(open[slot as usize].take()),
                    Step::Confirm(n) if !sent.is_empty() => {
                        let (ticket, units) = sent.remove(n % sent.len());
                        f.confirm(ticket);
                        for u in units {
                            pending[u as usize] -= 1;
                        }
                    }
                    Step::Confirm(_) => {}
                }
                let want = pending.iter().take_while(|&&n| n == 0).count() as u64;
                let want = want.checked_sub(1);
                prop_assert_eq!(f.landed().copied(), want);
                prop_assert!(last <= want, "moved backwards");
                last = want;
            }
        }
    }
}
