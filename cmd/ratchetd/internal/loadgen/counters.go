package loadgen

import (
	"reflect"
	"strings"
	"unicode"

	"github.com/ratchetd/ratchetd"
)

// counters returns every integer field of the engine's Stats by name. The
// report and the metrics read the counters this way so that they follow the
// engine as it gains counters, with no change here.
func counters(s ratchetd.Stats) map[string]int64 {
	v := reflect.ValueOf(s)
	t := v.Type()
	out := make(map[string]int64, t.NumField())
	for i := range t.NumField() {
		f := v.Field(i)
		if t.Field(i).IsExported() && f.CanInt() {
			out[t.Field(i).Name] = f.Int()
		}
	}
	return out
}

// gauges are the Stats fields that are levels, not running totals.
var gauges = map[string]bool{"SessionsActive": true, "MaxBatch": true, "MailboxDepth": true}

// snake turns a Go field name into a metric name part: "DecryptFailures"
// → "decrypt_failures", "X3DHActive" → "x3dh_active".
func snake(name string) string {
	var b strings.Builder
	rs := []rune(name)
	for i, r := range rs {
		if unicode.IsUpper(r) && i > 0 {
			// A word starts after a lower-case letter, or at the last
			// capital of an acronym ("X3DH|Active").
			prevLower := unicode.IsLower(rs[i-1])
			nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
			if prevLower || nextLower {
				b.WriteByte('_')
			}
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
