//! The public API's JSON shapes (DESIGN §9), shared by the server, the typed
//! client and the load test.

mod message;

pub use message::{Message, QueuedMessage};
