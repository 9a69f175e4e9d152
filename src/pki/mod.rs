pub mod address;
pub mod ca;
pub mod crl;
pub mod profile;
pub mod revocation;
pub mod trust;
pub mod urls;
