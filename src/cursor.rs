//! The range cursor of one partition: where its read is, whether a fetched offset is the next
//! element, when the read is finished and where the fetcher must seek. Pure bookkeeping (no
//! Kafka): the reader feeds it offsets and acts on the [`Action`] it returns.
//!
//! The exactness promise rests here (DESIGN.md §2.1, §2.5): the position is the next offset not
//! yet emitted, it moves only when an element is emitted (or a reset policy skips what the log
//! no longer holds), and offsets that do not exist (compacted records, transaction markers)
//! never hold a range open.

use crate::spec::{last_before, StreamSpec, UNLIMITED};

/// What the reader must do after the cursor has looked at an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The offered message is the next element of the partition: deliver it.
    Deliver,
    /// Nothing to deliver and nothing to change: keep fetching (an offered message before the
    /// position is dropped).
    Continue,
    /// Drop what was fetched below this offset and move the fetcher there: the next range
    /// starts after a gap.
    Seek(i64),
    /// The partition's last range is complete: stop fetching it.
    Finished,
}

/// Position of one partition within its chained ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    spec: StreamSpec,
    /// Index of the range being read (`ranges.len()` once finished).
    range: usize,
    /// Next offset not yet emitted.
    next_offset: i64,
    finished: bool,
}

impl Cursor {
    /// A cursor at the start of `spec`'s first range.
    pub fn new(spec: StreamSpec) -> Self {
        let start = spec.ranges.first().map_or(0, |r| r.start);
        Self::restore(spec, start, false)
    }

    /// A cursor at a saved position: `next_offset` is the next offset not yet emitted. A
    /// position past a range (or between two) lands in the first range not yet complete, at its
    /// start at the earliest; a position before the first range's start stays (only a reset
    /// puts it there, see [`Cursor::rewind_to`]).
    pub fn restore(spec: StreamSpec, next_offset: i64, finished: bool) -> Self {
        let range = spec
            .ranges
            .iter()
            .position(|r| !r.is_past(next_offset))
            .unwrap_or(spec.ranges.len());
        let next_offset = match spec.ranges.get(range) {
            Some(r) if range > 0 => next_offset.max(r.start),
            _ => next_offset,
        };
        Cursor {
            finished: finished || range == spec.ranges.len(),
            range,
            next_offset,
            spec,
        }
    }

    /// The partition and its ranges.
    #[inline]
    pub fn spec(&self) -> &StreamSpec {
        &self.spec
    }

    /// Next offset not yet emitted (what a checkpoint saves).
    #[inline]
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Whether the partition produced its last element.
    #[inline]
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Where the fetcher starts for this position (`None` once finished).
    #[inline]
    pub fn fetch_from(&self) -> Option<i64> {
        (!self.finished).then_some(self.next_offset)
    }

    /// Looks at a fetched message's offset and timestamp: [`Action::Deliver`] when it is the
    /// next element. An offset past the current range completes that range first (the offsets
    /// between did not exist: compaction, transaction markers), which may finish the read or
    /// call for a seek to the next range; so does the first timestamp at or after the range's
    /// open time end, which freezes the range's last offset just before this message.
    #[inline]
    pub fn offer(&mut self, offset: i64, timestamp: i64) -> Action {
        loop {
            if self.finished || offset < self.next_offset {
                return Action::Continue;
            }
            if let Some(until) = self.current_open_until() {
                if timestamp >= until {
                    self.freeze_current_range(offset);
                }
            }
            if self.current_range_is_past(offset) {
                match self.advance_range() {
                    Action::Seek(start) if offset < start => return Action::Seek(start),
                    Action::Finished => return Action::Finished,
                    _ => continue,
                }
            }
            return Action::Deliver;
        }
    }

    /// Records that the message at `offset` was emitted: the position moves past it, and past
    /// its range when it was the range's last offset.
    #[inline]
    pub fn emitted(&mut self, offset: i64) -> Action {
        self.next_offset = offset + 1;
        if self.current_range_is_past(self.next_offset) {
            self.advance_range()
        } else {
            Action::Continue
        }
    }

    /// The fetcher reached the end of the log: every offset below `end` was offered or does
    /// not exist. With `eof` the read is finished; otherwise bounded ranges whose remaining
    /// offsets all lie below `end` are complete although their last offset never arrived.
    pub fn end_of_log(&mut self, end: i64, eof: bool) -> Action {
        if eof {
            self.finished = true;
            return Action::Finished;
        }
        let mut action = Action::Continue;
        while !self.finished && self.current_range_is_past(end) {
            action = match self.advance_range() {
                Action::Continue => action,
                other => other,
            };
        }
        action
    }

    /// Ends the read where it stands (e.g. the position lies beyond the end of the log and
    /// the read ends there).
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// The time end the current range still waits for (see [`crate::spec::Range::until`]).
    #[inline]
    pub fn current_open_until(&self) -> Option<i64> {
        self.spec
            .ranges
            .get(self.range)
            .and_then(|r| r.open_until())
            .filter(|_| !self.finished)
    }

    /// The wall clock reached `now_ms` while the fetcher is at the end of the log with nothing
    /// left to emit: a current range whose open time end has passed completes at the position
    /// (what arrives later is after its end). Returns what the fetcher must do.
    pub fn time_passed(&mut self, now_ms: i64) -> Action {
        match self.current_open_until() {
            Some(until) if until <= now_ms => {
                self.freeze_current_range(self.next_offset);
                self.advance_range()
            }
            _ => Action::Continue,
        }
    }

    /// Freezes the current range's last offset just before `offset` (its time end).
    fn freeze_current_range(&mut self, offset: i64) {
        let range = &mut self.spec.ranges[self.range];
        range.last = last_before(range.start, offset);
    }

    /// Moves the position back to `target` because it lies beyond the end of the log (an
    /// explicit `auto.offset.reset`, as librdkafka would). In the first range the position may
    /// go before the range's start (DeepRec's `"t:0:5000"` with `earliest` on a shorter log reads
    /// it from its start; a save and restore keeps such a position); in a later range never
    /// before its start, which would read offsets between ranges or ranges already read.
    /// Returns how many offsets the position moved back and the seek, or `None` when the target
    /// is not behind the position or not allowed.
    pub fn rewind_to(&mut self, target: i64) -> Option<(u64, Action)> {
        if self.finished || target >= self.next_offset || target < 0 {
            return None;
        }
        if self.range > 0 && target < self.spec.ranges[self.range].start {
            return None;
        }
        let rewound = (self.next_offset - target) as u64;
        self.next_offset = target;
        Some((rewound, Action::Seek(target)))
    }

    /// Moves the position to `target` because the log no longer holds the offsets before it
    /// (a reset policy). Returns how many offsets the ranges wanted that are skipped, and what
    /// the fetcher must do: start again at the new position ([`Action::Seek`]) or stop
    /// ([`Action::Finished`]). A target behind the position changes nothing.
    pub fn skip_to(&mut self, target: i64) -> (u64, Action) {
        let from = self.next_offset;
        let skipped: i64 = self.spec.ranges[self.range.min(self.spec.ranges.len())..]
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| {
                let end = if r.last == UNLIMITED {
                    target
                } else {
                    target.min(r.last + 1)
                };
                (end - from.max(r.start)).max(0)
            })
            .sum();
        self.next_offset = self.next_offset.max(target);
        while !self.finished && self.current_range_is_past(self.next_offset) {
            self.advance_range();
        }
        let action = if self.finished {
            Action::Finished
        } else {
            Action::Seek(self.next_offset)
        };
        (skipped as u64, action)
    }

    #[inline]
    fn current_range_is_past(&self, offset: i64) -> bool {
        self.spec
            .ranges
            .get(self.range)
            .is_some_and(|r| r.is_past(offset))
    }

    /// Moves to the next range: [`Action::Seek`] when it starts after the position,
    /// [`Action::Finished`] after the last range.
    fn advance_range(&mut self) -> Action {
        self.range += 1;
        match self.spec.ranges.get(self.range) {
            Some(r) => {
                let seek = r.start > self.next_offset;
                self.next_offset = self.next_offset.max(r.start);
                if seek {
                    Action::Seek(r.start)
                } else {
                    Action::Continue
                }
            }
            None => {
                self.finished = true;
                Action::Finished
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Range;

    fn spec(ranges: &[(i64, i64)]) -> StreamSpec {
        StreamSpec {
            topic: "t".into(),
            partition: 0,
            ranges: ranges
                .iter()
                .map(|&(start, last)| Range::new(start, last))
                .collect(),
        }
    }

    /// Offers `offsets` in order, emitting each delivered one; returns the emitted offsets and
    /// every action that was not Deliver or Continue.
    fn read(
        cursor: &mut Cursor,
        offsets: impl IntoIterator<Item = i64>,
    ) -> (Vec<i64>, Vec<Action>) {
        let (mut emitted, mut actions) = (Vec::new(), Vec::new());
        for offset in offsets {
            match cursor.offer(offset, 0) {
                Action::Deliver => {
                    emitted.push(offset);
                    match cursor.emitted(offset) {
                        Action::Continue => {}
                        other => actions.push(other),
                    }
                }
                Action::Continue => {}
                other => actions.push(other),
            }
        }
        (emitted, actions)
    }

    #[test]
    fn a_single_range_delivers_its_offsets_and_finishes_on_its_last() {
        let mut c = Cursor::new(spec(&[(2, 4)]));
        assert_eq!(c.fetch_from(), Some(2));
        let (emitted, actions) = read(&mut c, 0..10);
        assert_eq!(emitted, [2, 3, 4]);
        assert_eq!(actions, [Action::Finished]);
        assert!(c.is_finished());
        assert_eq!(c.next_offset(), 5);
        assert_eq!(c.fetch_from(), None);
    }

    #[test]
    fn chained_contiguous_ranges_need_no_seek() {
        let mut c = Cursor::new(spec(&[(0, 2), (3, 5), (6, UNLIMITED)]));
        let (emitted, actions) = read(&mut c, 0..9);
        assert_eq!(emitted, (0..9).collect::<Vec<_>>());
        assert!(actions.is_empty(), "{actions:?}");
        assert!(
            !c.is_finished(),
            "an open-ended range never finishes by offsets"
        );
    }

    #[test]
    fn a_gap_between_ranges_is_a_seek_and_refetched_offsets_are_dropped() {
        let mut c = Cursor::new(spec(&[(0, 1), (10, 11)]));
        let (emitted, actions) = read(&mut c, [0, 1]);
        assert_eq!((emitted, actions), (vec![0, 1], vec![Action::Seek(10)]));
        assert_eq!(c.next_offset(), 10);
        // Offsets fetched before the seek took effect are below the position.
        assert_eq!(c.offer(2, 0), Action::Continue);
        let (emitted, actions) = read(&mut c, [10, 11, 12]);
        assert_eq!((emitted, actions), (vec![10, 11], vec![Action::Finished]));
    }

    #[test]
    fn an_offset_past_the_range_completes_it_when_its_last_offsets_do_not_exist() {
        // Compaction removed offsets 3 and 4; the next record is 5.
        let mut c = Cursor::new(spec(&[(0, 4), (5, 7)]));
        let (emitted, actions) = read(&mut c, [0, 1, 2, 5, 6, 7]);
        assert_eq!(emitted, [0, 1, 2, 5, 6, 7]);
        assert_eq!(actions, [Action::Finished]);
        // The same gap before a later range: the fetcher must jump there.
        let mut c = Cursor::new(spec(&[(0, 4), (9, 9)]));
        assert_eq!(read(&mut c, [0, 5]).1, [Action::Seek(9)]);
        assert_eq!(c.next_offset(), 9);
        // And after the last range: finished without its last offset.
        let mut c = Cursor::new(spec(&[(0, 4)]));
        assert_eq!(read(&mut c, [0, 6]), (vec![0], vec![Action::Finished]));
        assert_eq!(
            c.next_offset(),
            1,
            "the position stays at the last emitted + 1"
        );
    }

    #[test]
    fn offsets_inside_a_range_with_gaps_are_delivered() {
        let mut c = Cursor::new(spec(&[(0, 9)]));
        let (emitted, actions) = read(&mut c, [0, 3, 4, 8, 9]);
        assert_eq!(emitted, [0, 3, 4, 8, 9]);
        assert_eq!(actions, [Action::Finished]);
    }

    #[test]
    fn end_of_log_past_a_bounded_range_completes_it() {
        // Offset 3 (the range's last) is a transaction marker: the log ends at 4.
        let mut c = Cursor::restore(spec(&[(0, 3)]), 3, false);
        assert_eq!(c.end_of_log(4, false), Action::Finished);
        let mut c = Cursor::restore(spec(&[(0, 3), (10, UNLIMITED)]), 3, false);
        assert_eq!(c.end_of_log(4, false), Action::Seek(10));
        assert_eq!(c.next_offset(), 10);
        assert!(!c.is_finished());
        // Several ranges below the end at once.
        let mut c = Cursor::restore(spec(&[(0, 3), (4, 5), (8, 9)]), 3, false);
        assert_eq!(c.end_of_log(12, false), Action::Finished);
    }

    #[test]
    fn end_of_log_inside_a_range_changes_nothing_without_eof_and_finishes_with_it() {
        let mut c = Cursor::restore(spec(&[(0, 3)]), 3, false);
        assert_eq!(c.end_of_log(3, false), Action::Continue);
        assert!(!c.is_finished());
        let mut c = Cursor::restore(spec(&[(0, UNLIMITED)]), 7, false);
        assert_eq!(c.end_of_log(7, true), Action::Finished);
        assert!(c.is_finished());
        assert_eq!(c.next_offset(), 7);
    }

    #[test]
    fn restore_lands_in_the_first_incomplete_range() {
        let ranges = [(0, 4), (10, 14), (20, UNLIMITED)];
        // Mid-range.
        let c = Cursor::restore(spec(&ranges), 2, false);
        assert_eq!((c.range, c.fetch_from()), (0, Some(2)));
        // Just past a range's last: the next range, at its start.
        let c = Cursor::restore(spec(&ranges), 5, false);
        assert_eq!((c.range, c.fetch_from()), (1, Some(10)));
        // Inside the open-ended range.
        let c = Cursor::restore(spec(&ranges), 25, false);
        assert_eq!((c.range, c.fetch_from()), (2, Some(25)));
        // Past every bounded range.
        let c = Cursor::restore(spec(&[(0, 4)]), 5, false);
        assert!(c.is_finished());
        assert_eq!(c.next_offset(), 5);
        // Saved as finished inside a range (eof ended it): stays finished.
        let c = Cursor::restore(spec(&[(0, UNLIMITED)]), 3, true);
        assert_eq!(c.fetch_from(), None);
    }

    #[test]
    fn a_restored_cursor_continues_exactly() {
        let ranges = [(0, 3), (6, 8)];
        let mut whole = Cursor::new(spec(&ranges));
        let all: Vec<i64> = read(&mut whole, 0..12).0;
        for split in 0..all.len() {
            let mut first = Cursor::new(spec(&ranges));
            let mut emitted = read(&mut first, all[..split].iter().copied()).0;
            let mut second =
                Cursor::restore(spec(&ranges), first.next_offset(), first.is_finished());
            let from = second.fetch_from().unwrap();
            emitted.extend(read(&mut second, from..12).0);
            assert_eq!(emitted, all, "restored after {split} elements");
        }
    }

    #[test]
    fn a_reset_skips_and_counts_the_offsets_the_ranges_wanted() {
        // Earliest: the log now starts at 5; 2..4 of the range are gone.
        let mut c = Cursor::restore(spec(&[(0, 9)]), 2, false);
        assert_eq!(c.skip_to(5), (3, Action::Seek(5)));
        assert_eq!(c.next_offset(), 5);
        // Across ranges: 2..4 of the first and 10..11 of the second, landing in the second.
        let mut c = Cursor::restore(spec(&[(0, 4), (10, 14)]), 2, false);
        assert_eq!(c.skip_to(12), (5, Action::Seek(12)));
        // Between ranges: lands at the next range's start.
        let mut c = Cursor::restore(spec(&[(0, 4), (10, 14)]), 2, false);
        assert_eq!(c.skip_to(7), (3, Action::Seek(10)));
        // Latest, past every bounded range: finished, counting what the ranges wanted.
        let mut c = Cursor::restore(spec(&[(0, 4), (10, 14)]), 2, false);
        assert_eq!(c.skip_to(100), (8, Action::Finished));
        // Open-ended: everything up to the target.
        let mut c = Cursor::restore(spec(&[(3, UNLIMITED)]), 3, false);
        assert_eq!(c.skip_to(50), (47, Action::Seek(50)));
        // A target behind the position skips nothing.
        let mut c = Cursor::restore(spec(&[(0, UNLIMITED)]), 20, false);
        assert_eq!(c.skip_to(10), (0, Action::Seek(20)));
    }

    #[test]
    fn a_finished_cursor_delivers_nothing() {
        let mut c = Cursor::restore(spec(&[(0, UNLIMITED)]), 0, false);
        c.finish();
        assert_eq!(c.offer(0, 0), Action::Continue);
        assert_eq!(c.offer(100, 0), Action::Continue);
        assert_eq!(c.fetch_from(), None);
    }

    fn timed(start: i64, until: i64) -> StreamSpec {
        StreamSpec {
            topic: "t".into(),
            partition: 0,
            ranges: vec![Range {
                start,
                last: UNLIMITED,
                until: Some(until),
            }],
        }
    }

    #[test]
    fn an_open_time_end_freezes_at_the_first_timestamp_at_or_after_it() {
        let mut c = Cursor::new(timed(3, 1000));
        for (offset, ts) in [(3, 500), (4, 999), (5, 2)] {
            assert_eq!(c.offer(offset, ts), Action::Deliver);
            assert_eq!(c.emitted(offset), Action::Continue);
        }
        // Timestamps may go backwards; the first one at or after the end ends the range.
        assert_eq!(c.offer(6, 1000), Action::Finished);
        assert_eq!(c.spec().ranges[0].last, 5);
        assert_eq!(c.current_open_until(), None);
        // The frozen range restores like any other: finished at 6.
        let r = Cursor::restore(c.spec().clone(), 6, false);
        assert!(r.is_finished());
        // The first message already past the end: an empty range, not an unlimited one.
        let mut c = Cursor::new(timed(0, 10));
        assert_eq!(c.offer(0, 10), Action::Finished);
        assert!(c.spec().ranges[0].is_empty());
    }

    #[test]
    fn a_time_end_passed_by_the_clock_completes_a_caught_up_range() {
        let mut c = Cursor::new(timed(0, 1000));
        assert_eq!(c.offer(0, 1), Action::Deliver);
        c.emitted(0);
        assert_eq!(c.time_passed(999), Action::Continue);
        assert_eq!(c.time_passed(1000), Action::Finished);
        assert_eq!(c.spec().ranges[0].last, 0);
    }

    #[test]
    fn a_rewind_may_leave_the_first_range_start_behind_but_no_later_ones() {
        // Beyond the log end at the start: the position goes where the reset says.
        let mut c = Cursor::new(spec(&[(100, UNLIMITED)]));
        assert_eq!(c.rewind_to(40), Some((60, Action::Seek(40))));
        assert_eq!((c.next_offset(), c.spec().ranges[0].start), (40, 100));
        assert_eq!(read(&mut c, [40, 41]).0, [40, 41]);
        // The position survives a save and restore.
        let r = Cursor::restore(c.spec().clone(), c.next_offset(), false);
        assert_eq!(r.fetch_from(), Some(42));
        // A later range: back to its start at most, never between ranges or into one read.
        let mut c = Cursor::restore(spec(&[(0, 4), (10, UNLIMITED)]), 15, false);
        assert_eq!(c.rewind_to(7), None);
        assert_eq!(c.rewind_to(3), None);
        assert_eq!(c.rewind_to(11), Some((4, Action::Seek(11))));
        // Forward is not a rewind.
        assert_eq!(c.rewind_to(12), None);
    }

    #[test]
    fn a_reset_counts_nothing_for_empty_ranges() {
        let mut empty = spec(&[(0, 4), (10, 0), (20, 30)]);
        empty.ranges[1].last = crate::spec::EMPTY;
        let mut c = Cursor::restore(empty, 5, false);
        // Skipping from 5 to 25: offsets 20..24 of the last range; the empty range adds none.
        assert_eq!(c.skip_to(25), (5, Action::Seek(25)));
    }
}
