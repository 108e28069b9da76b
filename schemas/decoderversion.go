package schemas

// DecoderVersion names the semantics of Decoder beyond what
// Stream.SchemaVersion covers: which messages it accepts (limits, JSON
// grammar, accepted timestamp forms and range, number parsing) and the
// event it makes of them. Bump it with any change to the decoder that could
// change a verdict or a decoded value.
//
// The archiver records it in the footer of every raw file it writes, next
// to the stream's SchemaVersion, with the decoded event of every valid
// message in typed columns. The batch layer takes those typed columns as
// Decoder's output only when both versions match its own, and decodes the
// original bytes again otherwise; a stale version here would make it trust
// events decoded under other rules.
const DecoderVersion = "1"
