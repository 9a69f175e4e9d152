//! Certificate profiles: the built-in CA, and mailbox certificates per the CA/Browser
//! Forum S/MIME Baseline Requirements, mailbox-validated strict profile (§7.1.2.3).

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280::ID_KP_EMAIL_PROTECTION;
use der::asn1::{Ia5String, Ia5StringRef, SetOfVec, Utf8StringRef};
use der::{Any, Decode, Encode};
use spki::SubjectPublicKeyInfoRef;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies, CrlDistributionPoints,
    ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::{Name, RelativeDistinguishedName};

use crate::hsm::KeyAlgorithm;

/// CA/B Forum reserved policy OID for mailbox-validated, strict profile.
pub const POLICY_MAILBOX_VALIDATED_STRICT: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.23.140.1.5.1.3");

/// Self-signed root of the built-in CA.
pub struct CaProfile {
    pub subject: Name,
}

impl BuilderProfile for CaProfile {
    fn get_issuer(&self, subject: &Name) -> Name {
        subject.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    // Each extension is built seeing the ones before it (`to_extension` checks them).
    #[allow(clippy::vec_init_then_push)]
    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let mut extensions = Vec::new();
        extensions.push(
            BasicConstraints {
                ca: true,
                path_len_constraint: Some(0),
            }
            .to_extension(tbs.subject(), &extensions)?,
        );
        extensions.push(
            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)
                .to_extension(tbs.subject(), &extensions)?,
        );
        extensions.push(
            AuthorityKeyIdentifier {
                key_identifier: Some(ski.0.clone()),
                ..Default::default()
            }
            .to_extension(tbs.subject(), &extensions)?,
        );
        extensions.push(ski.to_extension(tbs.subject(), &extensions)?);
        Ok(extensions)
    }
}

/// A mailbox certificate: dual use, emailProtection only, SAN rfc822Name = the address.
pub struct MailboxProfile {
    pub issuer: Name,
    pub address: String,
    pub algorithm: KeyAlgorithm,
    pub crl_url: String,
}

impl MailboxProfile {
    /// Key usage of the strict profile's dual-use certificates: RSA signs and receives
    /// key transport; EC signs and takes part in key agreement.
    pub fn key_usage(algorithm: KeyAlgorithm) -> KeyUsage {
        if algorithm.is_rsa() {
            KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment)
        } else {
            KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyAgreement)
        }
    }
}

impl BuilderProfile for MailboxProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        // `MailboxProfile` is only built from addresses that `mailbox_subject` accepted.
        mailbox_subject(&self.address).unwrap_or_default()
    }

    // Each extension is built seeing the ones before it (`to_extension` checks them).
    #[allow(clippy::vec_init_then_push)]
    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let subject = tbs.subject();
        let issuer_ski = SubjectKeyIdentifier::try_from(issuer_spk)?;
        let mut extensions = Vec::new();
        extensions.push(
            BasicConstraints {
                ca: false,
                path_len_constraint: None,
            }
            .to_extension(subject, &extensions)?,
        );
        extensions.push(Self::key_usage(self.algorithm).to_extension(subject, &extensions)?);
        extensions.push(
            ExtendedKeyUsage(vec![ID_KP_EMAIL_PROTECTION]).to_extension(subject, &extensions)?,
        );
        extensions.push(
            SubjectAltName(vec![GeneralName::Rfc822Name(Ia5String::new(
                &self.address,
            )?)])
            .to_extension(subject, &extensions)?,
        );
        extensions.push(
            CertificatePolicies(vec![x509_cert::ext::pkix::certpolicy::PolicyInformation {
                policy_identifier: POLICY_MAILBOX_VALIDATED_STRICT,
                policy_qualifiers: None,
            }])
            .to_extension(subject, &extensions)?,
        );
        extensions.push(
            CrlDistributionPoints(vec![DistributionPoint {
                distribution_point: Some(DistributionPointName::FullName(vec![
                    GeneralName::UniformResourceIdentifier(Ia5String::new(&self.crl_url)?),
                ])),
                reasons: None,
                crl_issuer: None,
            }])
            .to_extension(subject, &extensions)?,
        );
        extensions.push(
            AuthorityKeyIdentifier {
                key_identifier: Some(issuer_ski.0),
                ..Default::default()
            }
            .to_extension(subject, &extensions)?,
        );
        extensions.push(SubjectKeyIdentifier::try_from(spk)?.to_extension(subject, &extensions)?);
        Ok(extensions)
    }
}

/// The SMTP listeners' TLS server certificate: serverAuth, SAN dNSName = host names.
pub struct TlsServerProfile {
    pub issuer: Name,
    pub hostnames: Vec<String>,
}

impl BuilderProfile for TlsServerProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        let first = self
            .hostnames
            .first()
            .map(String::as_str)
            .unwrap_or("localhost");
        format!("CN={first}").parse().unwrap_or_default()
    }

    #[allow(clippy::vec_init_then_push)]
    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let subject = tbs.subject();
        let issuer_ski = SubjectKeyIdentifier::try_from(issuer_spk)?;
        let mut extensions = Vec::new();
        extensions.push(
            BasicConstraints {
                ca: false,
                path_len_constraint: None,
            }
            .to_extension(subject, &extensions)?,
        );
        extensions
            .push(KeyUsage(KeyUsages::DigitalSignature.into()).to_extension(subject, &extensions)?);
        extensions.push(
            ExtendedKeyUsage(vec![const_oid::db::rfc5280::ID_KP_SERVER_AUTH])
                .to_extension(subject, &extensions)?,
        );
        let names = self
            .hostnames
            .iter()
            .map(|h| Ok(GeneralName::DnsName(Ia5String::new(h)?)))
            .collect::<der::Result<Vec<_>>>()?;
        extensions.push(SubjectAltName(names).to_extension(subject, &extensions)?);
        extensions.push(
            AuthorityKeyIdentifier {
                key_identifier: Some(issuer_ski.0),
                ..Default::default()
            }
            .to_extension(subject, &extensions)?,
        );
        extensions.push(SubjectKeyIdentifier::try_from(spk)?.to_extension(subject, &extensions)?);
        Ok(extensions)
    }
}

/// Subject of a mailbox certificate: `CN=<address>, emailAddress=<address>`; the strict
/// profile allows exactly these for a mailbox-validated certificate.
pub fn mailbox_subject(address: &str) -> der::Result<Name> {
    let email = AttributeTypeAndValue {
        oid: const_oid::db::rfc3280::EMAIL_ADDRESS,
        value: Any::from(Ia5StringRef::new(address)?),
    };
    let cn = AttributeTypeAndValue {
        oid: const_oid::db::rfc4519::CN,
        value: Any::from(Utf8StringRef::new(address)?),
    };
    let rdns = vec![
        RelativeDistinguishedName::from(SetOfVec::try_from(vec![email])?),
        RelativeDistinguishedName::from(SetOfVec::try_from(vec![cn])?),
    ];
    Name::from_der(&rdns.to_der()?)
}
