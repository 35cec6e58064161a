//! Bootstrap: how the ranks of one job find each other.
//!
//! One process creates a [`UniqueId`], which starts a small key-value store (Gloo's `Store`:
//! set / get / add / wait) in a background thread, and ships the id's 128 bytes to the other
//! ranks by any means (MPI, a file, an environment variable). Every rank then connects a
//! [`StoreClient`] to the store, publishes its transport connect handle and reads everyone
//! else's, usually with [`StoreClient::all_gather`]. A launcher can run the same
//! [`StoreServer`] itself and hand out ids made with [`UniqueId::from_parts`].
//!
//! Owns: the id (`unique_id`), the wire format (`proto`), the store server (`server`) and
//! client (`client`), and the choice of the root's network interface (`ifaddr`). Knows
//! nothing of transports or collectives: values are opaque bytes.
//!
//! Every connection proves the job secret before the server reads anything else from it;
//! every blocking call takes a timeout; the server thread ends by itself once all ranks
//! have said goodbye, or after an idle timeout.

mod client;
mod ifaddr;
mod news;
mod proto;
mod server;
mod unique_id;

#[cfg(test)]
mod tests;

pub use client::StoreClient;
pub use ifaddr::{advertised_ip, list_interfaces, pick_interface};
pub use news::NewsItem;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use proto::{fuzz_frame, fuzz_frame_seeds, fuzz_handshake, fuzz_handshake_seed};
pub use proto::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use server::{StoreServer, NEWS};
pub use unique_id::{random_secret, UniqueId, UNIQUE_ID_BYTES};
