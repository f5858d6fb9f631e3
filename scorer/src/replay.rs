//! Replaying a log into the engine: the log holds one record per event in the order the gateway
//! appended them, with the reader, the event time and when the batch was received. Consecutive
//! records of one reader (one request's batch) are applied together, as live traffic applied
//! them, so replay ends in the same state and the same decisions.

use crate::event::Observed;

/// Groups consecutive events of the same reader, received at the same moment, into batches of at
/// most `max` and hands each to `apply(reader, events, received_at)`.
#[derive(Debug)]
pub struct Batcher<E> {
    reader: String,
    received_at: u64,
    events: Vec<(E, u64)>,
    max: usize,
}

impl<E: Observed> Batcher<E> {
    /// A batcher of at most `max` events per batch.
    pub fn new(max: usize) -> Self {
        Self {
            reader: String::new(),
            received_at: 0,
            events: Vec::new(),
            max: max.max(1),
        }
    }

    /// Adds one record; applies the batch before it when this one starts another.
    pub fn push<R, F>(
        &mut self,
        reader: &str,
        received_at: u64,
        event: E,
        time: u64,
        apply: &mut F,
    ) -> Result<(), R>
    where
        F: FnMut(&str, &[(&E, u64)], u64) -> Result<(), R>,
    {
        if !self.events.is_empty()
            && (self.reader != reader
                || self.received_at != received_at
                || self.events.len() >= self.max)
        {
            self.flush(apply)?;
        }
        if self.events.is_empty() {
            reader.clone_into(&mut self.reader);
            self.received_at = received_at;
        }
        self.events.push((event, time));
        Ok(())
    }

    /// Applies what is buffered.
    pub fn flush<R, F>(&mut self, apply: &mut F) -> Result<(), R>
    where
        F: FnMut(&str, &[(&E, u64)], u64) -> Result<(), R>,
    {
        if self.events.is_empty() {
            return Ok(());
        }
        let refs: Vec<(&E, u64)> = self.events.iter().map(|(e, t)| (e, *t)).collect();
        let result = apply(&self.reader, &refs, self.received_at);
        self.events.clear();
        result
    }
}
