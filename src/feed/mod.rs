//! Transcript feeds: the wire protocol, the client that connects to feeds,
//! and the replay server that plays recorded meetings (the demo and tests).

pub mod adapters;
pub mod client;
pub mod meetings;
pub mod protocol;
pub mod replay;
pub mod upstream;
