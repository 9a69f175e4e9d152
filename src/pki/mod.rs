pub mod address;
pub mod ca;
pub mod profile;
