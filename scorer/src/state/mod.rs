//! Reader state: the binary codec, the dedupe of event ids, one reader's state, and the store it
//! lives in between batches.

pub(crate) mod codec;
mod dedupe;
mod reader;
mod store;

pub use codec::CodecError;
pub use dedupe::{Dedupe, Seen};
pub use reader::{Outcome, ReaderState, StateError};
pub use store::{MemoryStore, StateStore, StoreError, StoreMirror, Write};
