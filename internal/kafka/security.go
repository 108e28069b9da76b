package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	kgo "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/saslauthenticate"
	"github.com/segmentio/kafka-go/protocol/saslhandshake"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/tandem-analytics/tandem/schemas"
)

// Security is how every connection tandem makes to the brokers is
// encrypted and authenticated: the producer's, the consumer group's, the
// readers', the admin client's, the BatchFetcher's own and the health
// report's. The zero value is plaintext without authentication, what the
// in-process broker and a local Kafka speak.
type Security struct {
	// TLS, when set, wraps every connection (an SSL or SASL_SSL listener).
	TLS *tls.Config
	// SASL, when set, authenticates every connection before its first
	// request (SASL_PLAINTEXT or SASL_SSL).
	SASL sasl.Mechanism
}

// NewSecurity builds the Security that cfg (tandem.yaml's kafka section)
// asks for, reading the CA, certificate and password files it names.
// Errors name the setting at fault.
func NewSecurity(cfg schemas.KafkaConfig) (Security, error) {
	var s Security
	var err error
	if s.TLS, err = cfg.TLS.Load("kafka.tls"); err != nil {
		return Security{}, err
	}
	if !cfg.SASL.On() {
		return s, nil
	}
	pw, err := cfg.SASL.Secret()
	if err != nil {
		return Security{}, err
	}
	if s.SASL, err = NewSASL(cfg.SASL.Mechanism, cfg.SASL.Username, pw); err != nil {
		return Security{}, err
	}
	return s, nil
}

// NewSASL returns the mechanism of that name (schemas.SASLPlain,
// SASLScramSHA256 or SASLScramSHA512) for the user.
func NewSASL(mechanism, username, password string) (sasl.Mechanism, error) {
	switch mechanism {
	case schemas.SASLPlain:
		return plain.Mechanism{Username: username, Password: password}, nil
	case schemas.SASLScramSHA256:
		return scram.Mechanism(scram.SHA256, username, password)
	case schemas.SASLScramSHA512:
		return scram.Mechanism(scram.SHA512, username, password)
	}
	return nil, fmt.Errorf("kafka.sasl.mechanism %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", mechanism)
}

// String names the listener type the brokers must offer, for logs and
// errors; it never shows a secret.
func (s Security) String() string {
	switch {
	case s.TLS != nil && s.SASL != nil:
		return "SASL_SSL/" + s.SASL.Name()
	case s.SASL != nil:
		return "SASL_PLAINTEXT/" + s.SASL.Name()
	case s.TLS != nil:
		return "SSL"
	}
	return "PLAINTEXT"
}

// connectTimeout bounds setting up one connection. kafka-go applies a
// Transport's DialTimeout to the TLS and SASL handshakes as well, and a
// broker's first SASL_SSL handshakes (a JVM that has not warmed up, a
// managed cluster across a WAN) take seconds.
const connectTimeout = 10 * time.Second

// transport is a kafka-go Transport (producer, admin, status) with this
// security.
func (s Security) transport(clientID string) *kgo.Transport {
	return &kgo.Transport{
		Dial:        (&net.Dialer{Timeout: connectTimeout}).DialContext,
		DialTimeout: connectTimeout,
		IdleTimeout: 30 * time.Second,
		MetadataTTL: 6 * time.Second,
		ClientID:    clientID,
		TLS:         s.tls(),
		SASL:        s.SASL,
	}
}

// Secure sets this security on a kafka-go Transport built outside this
// package (the health report's) and returns it.
func (s Security) Secure(t *kgo.Transport) *kgo.Transport {
	t.TLS, t.SASL = s.tls(), s.SASL
	return t
}

// dialer is a kafka-go Dialer (consumer group, readers) with this security.
func (s Security) dialer(timeout time.Duration) *kgo.Dialer {
	return &kgo.Dialer{Timeout: timeout, DualStack: true, ClientID: "tandem", TLS: s.tls(), SASLMechanism: s.SASL}
}

// tls returns a copy: kafka-go fills in ServerName per broker on the
// config it is given, and one config is shared by many clients.
func (s Security) tls() *tls.Config {
	if s.TLS == nil {
		return nil
	}
	return s.TLS.Clone()
}

// dialRaw connects to one broker for a client that speaks the protocol
// itself (BatchFetcher): TCP, then the TLS handshake, then SASL, so the
// returned connection is ready for the first request.
func (s Security) dialRaw(ctx context.Context, host string, port int, timeout time.Duration) (net.Conn, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	nd := net.Dialer{Timeout: timeout}
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetDeadline(deadline)
	if s.TLS != nil {
		cfg := s.tls()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("kafka: TLS handshake with %s: %w", addr, err)
		}
		c = tc
	}
	if s.SASL != nil {
		if err := authenticate(sasl.WithMetadata(ctx, &sasl.Metadata{Host: host, Port: port}), c, s.SASL); err != nil {
			c.Close()
			return nil, fmt.Errorf("kafka: SASL %s authentication with %s: %w", s.SASL.Name(), addr, err)
		}
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// authenticate runs the SASL exchange on c: SaslHandshake v1 naming the
// mechanism, then SaslAuthenticate v0 requests until the mechanism is done.
// v1 of the handshake (not v0, which Kafka 4 no longer serves) is what
// puts the exchange in SaslAuthenticate frames; kafka-go's Transport does
// the same after asking for the broker's versions.
func authenticate(ctx context.Context, c net.Conn, m sasl.Mechanism) error {
	pc := protocol.NewConn(c, "tandem")
	pc.SetVersions(map[protocol.ApiKey]int16{protocol.SaslHandshake: 1, protocol.SaslAuthenticate: 0})
	msg, err := pc.RoundTrip(&saslhandshake.Request{Mechanism: m.Name()})
	if err != nil {
		return err
	}
	if hs := msg.(*saslhandshake.Response); hs.ErrorCode != 0 {
		return fmt.Errorf("%w (the broker offers %v)", kgo.Error(hs.ErrorCode), hs.Mechanisms)
	}
	sess, state, err := m.Start(ctx)
	if err != nil {
		return err
	}
	for done := false; !done; {
		msg, err := pc.RoundTrip(&saslauthenticate.Request{AuthBytes: state})
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return kgo.SASLAuthenticationFailed
			}
			return err
		}
		res := msg.(*saslauthenticate.Response)
		if res.ErrorCode != 0 {
			return fmt.Errorf("%w: %s", kgo.Error(res.ErrorCode), res.ErrorMessage)
		}
		if done, state, err = sess.Next(ctx, res.AuthBytes); err != nil {
			return err
		}
	}
	return nil
}
