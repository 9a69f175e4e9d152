#!/usr/bin/python3
"""A small SAML 2.0 identity provider on pysaml2's saml2.server.Server, for smimegate's tests.

Run by tests/saml/main.rs (and by the console's browser test) on loopback:

    idp.py serve DIR ENTITY_ID SP_METADATA
        binds 127.0.0.1 on a free port, writes DIR/idp-metadata.xml (its SSO URL on
        that port, the certificate DIR/idp-cert.pem of the key DIR/idp-key.pem the
        caller made with openssl; DIR/other-key.pem and other-cert.pem are the key
        not in the metadata), prints "listening PORT" and serves:
        GET /sso?SAMLRequest=..&RelayState=..[&user=U][&variant=V]
            the HTTP-Redirect binding: answers with an auto-submitting HTML form that
            POSTs SAMLResponse and RelayState to the SP's ACS (HTTP-POST binding).
            The user is logged in automatically: `user` (default "alice").
        GET /unsolicited?acs=URL[&user=U]
            an IdP-initiated response (no InResponseTo), in the same form.
        SP_METADATA (the SP's metadata) is read at the first request, so the caller
        can write it after it has read the IdP's metadata.
        It stops when its standard input closes (the test dropping it).

Users: alice (groups smimegate-admins, staff), erin (smimegate-editors),
victor (smimegate-viewers), mallory (staff only: no role at the SP).

Variants (hostile responses are made here on purpose; the SP under test is ours):
    (none)          assertion signed with RSA-SHA256 / SHA-256 by the IdP key
    sign-response   the response signed too
    unsigned        neither response nor assertion signed
    other-key       signed with a key that is not in the IdP's metadata
    sha1            signed with RSA-SHA1 / SHA-1 (pysaml2's own default)
    audience        AudienceRestriction names another SP
    no-audience     no AudienceRestriction at all (re-signed after removing it)
    destination     Recipient and Destination name another ACS
    recipient       only the (signed) Recipient names another ACS; the response's
                    unsigned Destination is ours
    expired         Conditions and SubjectConfirmation ended 10 minutes ago
    fixed-id        the assertion always has the same ID (for the replay cache)
    comment         an XML comment inserted into the signed NameID ("al<!-- -->ice"):
                    the signature stays valid (canonicalisation drops comments)
    wrapping        a second, unsigned assertion for "mallory-admin" in the
                    smimegate-admins group placed before the signed one
"""

import base64
import html
import os
import re
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_UNSPECIFIED, NameID
from saml2.server import Server
from saml2.xmldsig import DIGEST_SHA1, DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256

USERS = {
    "alice": {"groups": ["smimegate-admins", "staff"], "mail": ["alice@example.org"]},
    "erin": {"groups": ["smimegate-editors"], "mail": ["erin@example.org"]},
    "victor": {"groups": ["smimegate-viewers"], "mail": ["victor@example.org"]},
    "mallory": {"groups": ["staff"], "mail": ["mallory@example.org"]},
}

XMLSEC = "/usr/bin/xmlsec1"


def config(directory, entity_id, base_url, sp_metadata=None, key="idp", lifetime=None):
    conf = {
        "entityid": entity_id,
        "xmlsec_binary": XMLSEC,
        "key_file": os.path.join(directory, key + "-key.pem"),
        "cert_file": os.path.join(directory, key + "-cert.pem"),
        "service": {
            "idp": {
                "name": "smimegate test IdP",
                "endpoints": {
                    "single_sign_on_service": [
                        (base_url + "/sso", BINDING_HTTP_REDIRECT),
                    ],
                },
                "policy": {
                    "default": {
                        "lifetime": lifetime or {"minutes": 15},
                        "attribute_restrictions": None,
                        "name_form": "urn:oasis:names:tc:SAML:2.0:attrname-format:uri",
                    },
                },
                "name_id_format": [NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_UNSPECIFIED],
                "want_authn_requests_signed": False,
            },
        },
        "metadata": {"local": [sp_metadata]} if sp_metadata else {},
        "allow_unknown_attributes": True,
    }
    c = IdPConfig()
    c.load(conf)
    return c


def write_metadata(directory, entity_id, base_url):
    text = create_metadata_string(None, config=config(directory, entity_id, base_url), valid=24)
    if isinstance(text, bytes):
        text = text.decode()
    with open(os.path.join(directory, "idp-metadata.xml"), "w") as f:
        f.write(text)


class Idp:
    def __init__(self, directory, entity_id, base_url, sp_metadata):
        self.directory = directory
        self.entity_id = entity_id
        self.base_url = base_url
        self.sp_metadata = sp_metadata
        self.servers = {}
        self.lock = threading.Lock()

    def server(self, key="idp", lifetime=None):
        name = (key, str(lifetime))
        with self.lock:
            if name not in self.servers:
                self.servers[name] = Server(
                    config=config(self.directory, self.entity_id, self.base_url,
                                  self.sp_metadata, key, lifetime))
            return self.servers[name]

    def response(self, user, in_response_to, acs, sp_entity_id, variant):
        key = "other" if variant == "other-key" else "idp"
        lifetime = {"minutes": -10} if variant == "expired" else None
        server = self.server(key, lifetime)
        sign_alg, digest_alg = SIG_RSA_SHA256, DIGEST_SHA256
        if variant == "sha1":
            sign_alg, digest_alg = SIG_RSA_SHA1, DIGEST_SHA1
        audience = "https://elsewhere.example/sp" if variant == "audience" else sp_entity_id
        elsewhere = "https://elsewhere.example/saml/acs"
        destination = elsewhere if variant in ("recipient", "destination") else acs
        signed = variant not in ("unsigned", "no-audience", "fixed-id", "wrapping")
        identity = USERS[user]
        response = server.create_authn_response(
            identity=dict(identity),
            in_response_to=in_response_to,
            destination=destination,
            sp_entity_id=audience,
            userid=user,
            name_id=NameID(format=NAMEID_FORMAT_UNSPECIFIED, text=user),
            name_id_policy=None,
            authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"},
            sign_assertion=signed,
            sign_response=signed and variant == "sign-response",
            sign_alg=sign_alg,
            digest_alg=digest_alg,
        )
        xml = str(response)
        if variant == "recipient":
            # The Response element is outside the assertion's signature.
            xml = xml.replace('Destination="%s"' % elsewhere, 'Destination="%s"' % acs, 1)
        if variant in ("no-audience", "fixed-id", "wrapping"):
            xml = self.rework(xml, variant)
        if variant == "comment":
            xml = re.sub(r"(<(\w+:)?NameID[^>]*>)(%s)" % re.escape(user[:2]),
                         r"\1\3<!-- -->", xml, count=1)
        return xml

    def rework(self, xml, variant):
        """Changes an unsigned response, then signs its (first signed-to-be) assertion."""
        if variant == "no-audience":
            xml = re.sub(r"<(\w+:)?AudienceRestriction>.*?</(\w+:)?AudienceRestriction>", "", xml,
                         flags=re.S)
            return self.sign_assertion(xml)
        if variant == "fixed-id":
            xml = re.sub(r'(<(\w+:)?Assertion [^>]*?ID=")[^"]+"', r'\1id-fixed-assertion-0001"',
                         xml, count=1)
            return self.sign_assertion(xml)
        # wrapping: sign the real assertion, then put an unsigned forgery before it.
        signed = self.sign_assertion(xml)
        m = re.search(r"<(\w+:)?Assertion .*?</(\w+:)?Assertion>", signed, flags=re.S)
        real = m.group(0)
        forged = re.sub(r"<(\w+:)?Signature[ >].*?</(\w+:)?Signature>", "", real, flags=re.S)
        forged = re.sub(r'ID="[^"]+"', 'ID="id-forged-assertion"', forged, count=1)
        forged = re.sub(r"(<(\w+:)?NameID[^>]*>)[^<]*(</)", r"\1mallory-admin\3", forged, count=1)
        forged = forged.replace(">staff<", ">smimegate-admins<")
        return signed[:m.start()] + forged + signed[m.start():]

    def sign_assertion(self, xml):
        """Adds an enveloped RSA-SHA256 signature to the first Assertion with xmlsec1."""
        m = re.search(r'<((\w+:)?)Assertion ([^>]*?)ID="([^"]+)"([^>]*)>', xml)
        prefix, assertion_id = m.group(1), m.group(4)
        issuer_end = re.search(r"</(\w+:)?Issuer>", xml[m.end():])
        at = m.end() + issuer_end.end()
        template = (
            '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>'
            '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
            '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>'
            '<ds:Reference URI="#%s"><ds:Transforms>'
            '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
            '<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
            '</ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>'
            '<ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/>'
            '<ds:KeyInfo><ds:X509Data><ds:X509Certificate/></ds:X509Data></ds:KeyInfo>'
            '</ds:Signature>' % assertion_id
        )
        xml = xml[:at] + template + xml[at:]
        with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
            f.write(xml)
            path = f.name
        try:
            out = subprocess.run(
                [XMLSEC, "--sign", "--privkey-pem",
                 "%s,%s" % (os.path.join(self.directory, "idp-key.pem"),
                            os.path.join(self.directory, "idp-cert.pem")),
                 "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
                 "--output", "/dev/stdout", path],
                check=True, capture_output=True)
        finally:
            os.unlink(path)
        return out.stdout.decode()


def post_form(acs, saml_response, relay_state):
    fields = '<input type="hidden" name="SAMLResponse" value="%s"/>' % html.escape(
        base64.b64encode(saml_response.encode()).decode())
    if relay_state is not None:
        fields += '<input type="hidden" name="RelayState" value="%s"/>' % html.escape(relay_state)
    return (
        '<!DOCTYPE html><html><head><title>Signing in</title></head>'
        '<body onload="document.forms[0].submit()">'
        '<form method="post" action="%s">%s'
        '<noscript><button type="submit">Continue</button></noscript></form></body></html>'
        % (html.escape(acs), fields)
    )


def handler(idp):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            sys.stderr.write("idp: " + (fmt % args) + "\n")

        def answer(self, status, body, content_type="text/html; charset=utf-8"):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            user = query.get("user", "alice")
            variant = query.get("variant", "")
            if user not in USERS:
                return self.answer(403, "unknown user")
            try:
                if url.path == "/sso":
                    server = idp.server()
                    request = server.parse_authn_request(query["SAMLRequest"],
                                                        BINDING_HTTP_REDIRECT).message
                    acs = request.assertion_consumer_service_url
                    sp = request.issuer.text
                    xml = idp.response(user, request.id, acs, sp, variant)
                    return self.answer(200, post_form(acs, xml, query.get("RelayState")))
                if url.path == "/unsolicited":
                    acs = query["acs"]
                    sp = query["sp"]
                    xml = idp.response(user, None, acs, sp, variant)
                    return self.answer(200, post_form(acs, xml, query.get("RelayState")))
            except Exception as e:  # a test program: say what failed
                sys.stderr.write("idp: %r\n" % (e,))
                return self.answer(400, "bad request: %s" % html.escape(str(e)),
                                   "text/plain; charset=utf-8")
            return self.answer(404, "not found", "text/plain; charset=utf-8")

    return Handler


def main():
    if len(sys.argv) != 5 or sys.argv[1] != "serve":
        sys.exit("usage: idp.py serve DIR ENTITY_ID SP_METADATA")
    directory, entity_id, sp_metadata = sys.argv[2:5]
    idp = Idp(directory, entity_id, None, sp_metadata)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler(idp))
    port = httpd.server_address[1]
    idp.base_url = "http://127.0.0.1:%d" % port
    write_metadata(directory, entity_id, idp.base_url)
    print("listening %d" % port, flush=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    sys.stdin.read()
    httpd.shutdown()


if __name__ == "__main__":
    main()
