pub mod address;
pub mod ca;
pub mod crl;
pub mod pkcs12;
pub mod profile;
pub mod trust;
pub mod urls;
