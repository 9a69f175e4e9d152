//! Certificate profiles: the built-in CA (a root and an issuing CA below it), and
//! mailbox certificates per the CA/Browser Forum S/MIME Baseline Requirements,
//! mailbox-validated strict profile (§7.1.2.2 for the issuing CA, §7.1.2.3 for
//! mailboxes).

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280::ID_AD_CA_ISSUERS;
use const_oid::db::rfc5280::ID_KP_EMAIL_PROTECTION;
use der::asn1::{Ia5String, Ia5StringRef, SetOfVec, Utf8StringRef};
use der::{Any, Decode, Encode};
use spki::SubjectPublicKeyInfoRef;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
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

/// Longest validity of a strict (and multipurpose) mailbox certificate, notBefore to
/// notAfter, backdating included (S/MIME BR §6.3.2).
pub const MAX_MAILBOX_VALIDITY_DAYS: u32 = 825;

/// Longest common name (X.520 `ub-common-name`); longer addresses get none.
pub const MAX_COMMON_NAME: usize = 64;

/// Self-signed root of the built-in CA. It signs only the issuing CA below it and its
/// own CRLs (no path length constraint: the issuing CA is one level below).
pub struct CaProfile {
    pub subject: Name,
}

/// The issuing CA, signed by the root: it signs mailbox certificates and their CRL,
/// and the SMTP listeners' TLS server certificate. No CA below it (path length 0);
/// extended key usage emailProtection and serverAuth.
///
/// BR §7.1.2.2 wants emailProtection alone on a subordinate S/MIME CA. The gateway's
/// own SMTP TLS certificate needs a CA that clients may chain a server certificate
/// to (EKU is checked along the chain by OpenSSL and webpki), and the root signs
/// nothing but CAs and CRLs: so the issuing CA carries serverAuth too, a known
/// deviation (docs/lifecycle.md, the built-in CA). Operators who need the strict form give the
/// listeners a certificate of their own (`[smtp] tls_key` = a file).
pub struct IssuingCaProfile {
    pub issuer: Name,
    pub subject: Name,
    /// The root's CRL (covers this certificate).
    pub crl_url: String,
    /// The root's certificate.
    pub ca_issuers_url: String,
}

impl BuilderProfile for IssuingCaProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
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
                ca: true,
                path_len_constraint: Some(0),
            }
            .to_extension(subject, &extensions)?,
        );
        extensions.push(
            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)
                .to_extension(subject, &extensions)?,
        );
        extensions.push(
            ExtendedKeyUsage(vec![
                ID_KP_EMAIL_PROTECTION,
                const_oid::db::rfc5280::ID_KP_SERVER_AUTH,
            ])
            .to_extension(subject, &extensions)?,
        );
        extensions.push(
            CertificatePolicies(vec![x509_cert::ext::pkix::certpolicy::PolicyInformation {
                policy_identifier: POLICY_MAILBOX_VALIDATED_STRICT,
                policy_qualifiers: None,
            }])
            .to_extension(subject, &extensions)?,
        );
        extensions.push(crl_distribution_point(&self.crl_url)?.to_extension(subject, &extensions)?);
        extensions.push(ca_issuers(&self.ca_issuers_url)?.to_extension(subject, &extensions)?);
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

fn crl_distribution_point(url: &str) -> der::Result<CrlDistributionPoints> {
    Ok(CrlDistributionPoints(vec![DistributionPoint {
        distribution_point: Some(DistributionPointName::FullName(vec![
            GeneralName::UniformResourceIdentifier(Ia5String::new(url)?),
        ])),
        reasons: None,
        crl_issuer: None,
    }]))
}

/// Authority information access naming the issuer's certificate (caIssuers).
fn ca_issuers(url: &str) -> der::Result<AuthorityInfoAccessSyntax> {
    Ok(AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: ID_AD_CA_ISSUERS,
        access_location: GeneralName::UniformResourceIdentifier(Ia5String::new(url)?),
    }]))
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
                path_len_constraint: None,
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
    /// The issuing CA's certificate (authority information access, caIssuers); BR
    /// §7.1.2.3 wants it, tests issuing from throwaway CAs may leave it out.
    pub ca_issuers_url: Option<String>,
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
        extensions.push(crl_distribution_point(&self.crl_url)?.to_extension(subject, &extensions)?);
        if let Some(url) = &self.ca_issuers_url {
            extensions.push(ca_issuers(url)?.to_extension(subject, &extensions)?);
        }
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
/// profile allows exactly these for a mailbox-validated certificate. An address longer
/// than a common name may be (64 characters) gets no CN: the emailAddress attribute
/// and the subjectAltName carry it.
pub fn mailbox_subject(address: &str) -> der::Result<Name> {
    let email = AttributeTypeAndValue {
        oid: const_oid::db::rfc3280::EMAIL_ADDRESS,
        value: Any::from(Ia5StringRef::new(address)?),
    };
    let cn = AttributeTypeAndValue {
        oid: const_oid::db::rfc4519::CN,
        value: Any::from(Utf8StringRef::new(address)?),
    };
    let mut rdns = vec![RelativeDistinguishedName::from(SetOfVec::try_from(vec![
        email,
    ])?)];
    if address.chars().count() <= MAX_COMMON_NAME {
        rdns.push(RelativeDistinguishedName::from(SetOfVec::try_from(vec![
            cn,
        ])?));
    }
    Name::from_der(&rdns.to_der()?)
}
