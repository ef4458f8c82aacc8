package link

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// EnvTLSFingerprint carries, to rank 0, the SHA-256 fingerprint (hex) of the
// front end's per-run certificate: with it set, rank 0 speaks TLS and
// accepts only that certificate. The fingerprint is not a secret.
const EnvTLSFingerprint = "RANKFARM_TLS_FINGERPRINT"

// ErrFingerprint is the error of a TLS peer whose certificate is not the one
// the fingerprint names.
var ErrFingerprint = errors.New("link: the front end's certificate does not match the fingerprint")

// NewTLSIdentity makes a per-run self-signed certificate (ECDSA P-256, valid
// for validFor) for the front end's Listener, and returns the server's TLS
// configuration and the certificate's SHA-256 fingerprint. Blocks check the
// fingerprint instead of a certificate authority: nothing else is needed on
// the compute nodes.
func NewTLSIdentity(validFor time.Duration) (*tls.Config, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("link: TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, fmt.Errorf("link: TLS serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "rankfarm front end"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("link: TLS certificate: %w", err)
	}
	sum := sha256.Sum256(der)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS13,
	}
	return cfg, sum[:], nil
}

// ParseFingerprint reads a fingerprint as EnvTLSFingerprint carries it.
func ParseFingerprint(s string) ([]byte, error) {
	fp, err := hex.DecodeString(s)
	if err != nil || len(fp) != sha256.Size {
		return nil, fmt.Errorf("link: %s=%q is not a SHA-256 fingerprint in hex", EnvTLSFingerprint, s)
	}
	return fp, nil
}

// clientTLS is rank 0's TLS configuration: it accepts exactly the
// certificate whose SHA-256 is fingerprint.
func clientTLS(fingerprint []byte) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The certificate is self-signed, so no chain can be verified: the
		// fingerprint check below replaces it.
		InsecureSkipVerify: true, //nolint:gosec // pinned by fingerprint
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return ErrFingerprint
			}
			sum := sha256.Sum256(raw[0])
			if subtle.ConstantTimeCompare(sum[:], fingerprint) != 1 {
				return ErrFingerprint
			}
			return nil
		},
	}
}
