//! Reader state: the binary codec, the dedupe of event ids, one reader's state, and the store it
//! lives in between batches.

pub(crate) mod codec;
