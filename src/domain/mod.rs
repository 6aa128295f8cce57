//! Newtypes that parse once: a value of one of these types has passed its rules.

pub mod api_key;
pub mod event_type;
pub mod net;
pub mod org;
pub mod secret;
pub mod time;
pub mod url;

pub use api_key::{ApiKey, KeyHash, Role};
pub use event_type::{EventName, EventTypeRef};
pub use org::OrgId;
pub use secret::Secret;
pub use time::Timestamp;
pub use url::{EndpointId, EndpointUrl};
