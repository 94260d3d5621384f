package checks

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/labctl/labctl/labs"
)

// Messages shown to a learner whose answer does not match. They are
// deliberately generic: a message that says why an answer is wrong
// ("too high", "not the process the kernel killed") gives the answer away
// by bisection.
const (
	msgRight = "that is right"
	msgWrong = "that is not it"
)

// Judge compares a learner's answer with a matcher. Template-valued
// expectations are rendered over facts first. The error is about the lab
// (a template over a missing fact, an invalid regex), never about the
// answer: a malformed answer is simply wrong.
func Judge(m *labs.Matcher, answer string, facts map[string]string) (Result, error) {
	if m == nil {
		return Result{}, errors.New("check has no answer matcher")
	}
	render := func(field, text string) (string, error) {
		out, err := labs.Render(text, facts)
		if err != nil {
			return "", fmt.Errorf("answer.%s: %w", field, err)
		}
		return out, nil
	}
	res := Result{Seen: answer}
	var pass bool
	switch {
	case m.Equals != "":
		want, err := render("equals", m.Equals)
		if err != nil {
			return Result{}, err
		}
		res.Wanted = want
		pass = normalize(answer, m.CaseSensitive) == normalize(want, m.CaseSensitive)
	case len(m.OneOf) > 0:
		wants := make([]string, 0, len(m.OneOf))
		got := normalize(answer, m.CaseSensitive)
		for i, w := range m.OneOf {
			want, err := render(fmt.Sprintf("oneOf[%d]", i), w)
			if err != nil {
				return Result{}, err
			}
			wants = append(wants, want)
			if got == normalize(want, m.CaseSensitive) {
				pass = true
			}
		}
		res.Wanted = "one of: " + strings.Join(wants, ", ")
	case m.Regex != "":
		want, err := render("regex", m.Regex)
		if err != nil {
			return Result{}, err
		}
		res.Wanted = "matches " + want
		re, err := compileWhole(want, m.CaseSensitive)
		if err != nil {
			return Result{}, fmt.Errorf("answer.regex: %w", err)
		}
		pass = re.MatchString(strings.TrimSpace(answer))
	case m.Number != nil:
		want, err := render("number.value", m.Number.Value)
		if err != nil {
			return Result{}, err
		}
		res.Wanted = want
		if m.Number.Tolerance != "" {
			res.Wanted += " ± " + m.Number.Tolerance
		}
		pass, err = numberMatches(want, m.Number.Tolerance, answer)
		if err != nil {
			return Result{}, fmt.Errorf("answer.number: %w", err)
		}
	case m.PID != "":
		want, err := render("pid", m.PID)
		if err != nil {
			return Result{}, err
		}
		res.Wanted = "PID " + want
		wantPID, err := strconv.Atoi(strings.TrimSpace(want))
		if err != nil || wantPID <= 0 {
			return Result{}, fmt.Errorf("answer.pid: %q is not a PID", want)
		}
		got, ok := parsePIDAnswer(answer)
		pass = ok && got == wantPID
	case m.Contains != "":
		want, err := render("contains", m.Contains)
		if err != nil {
			return Result{}, err
		}
		res.Wanted = "contains " + want
		pass = strings.Contains(normalize(answer, m.CaseSensitive), normalize(want, m.CaseSensitive))
	case m.Hash != "":
		// The point of a hashed answer is that nobody, not even --reveal,
		// reads it out of the lab file.
		res.Wanted = "(hashed)"
		// labs.MatchHash only trims; also try the answer with inner white
		// space collapsed, as the other matchers compare.
		pass = labs.MatchHash(m.Hash, answer, m.CaseSensitive) ||
			labs.MatchHash(m.Hash, strings.Join(strings.Fields(answer), " "), m.CaseSensitive)
	default:
		return Result{}, errors.New("answer matcher has no comparison set")
	}
	res.Pass = pass
	res.Message = msgWrong
	if pass {
		res.Message = msgRight
	}
	return res, nil
}

// normalize trims, collapses inner runs of white space to one space and,
// unless caseSensitive, folds case, so "  OOM   Killer" equals "oom killer".
func normalize(s string, caseSensitive bool) string {
	s = strings.Join(strings.Fields(s), " ")
	if !caseSensitive {
		s = strings.ToLower(s)
	}
	return s
}

// compileWhole compiles an RE2 expression anchored at both ends, so
// "work" does not accept "worker". Matching folds case unless
// caseSensitive, like the other matchers.
func compileWhole(expr string, caseSensitive bool) (*regexp.Regexp, error) {
	flags := ""
	if !caseSensitive {
		flags = "(?i)"
	}
	return regexp.Compile(flags + `^(?:` + expr + `)$`)
}

// parsePIDAnswer accepts "1234", "PID 1234", "pid: 1234" and "#1234".
func parsePIDAnswer(answer string) (int, bool) {
	s := strings.TrimSpace(answer)
	if len(s) >= 3 && strings.EqualFold(s[:3], "pid") {
		s = s[3:]
	}
	s = strings.TrimLeft(s, " \t:=#")
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// quantity is a number with the dimension its unit implies.
type quantity struct {
	value float64
	dim   dimension
}

type dimension int

const (
	dimPlain dimension = iota
	dimBytes
	dimSeconds
	dimPercent
)

func (d dimension) String() string {
	return [...]string{"plain number", "size", "duration", "percentage"}[d]
}

// parseQuantity reads "67108864", "64Mi", "64 MiB", "0.0625Gi", "1.5G",
// "10s", "1m30s", "250ms", "12.5%" and "0.5".
func parseQuantity(s string) (quantity, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return quantity{}, errors.New("empty")
	}
	if p, ok := strings.CutSuffix(t, "%"); ok {
		f, err := parseFloat(p)
		if err != nil {
			return quantity{}, err
		}
		return quantity{f, dimPercent}, nil
	}
	if f, err := parseFloat(t); err == nil {
		return quantity{f, dimPlain}, nil
	}
	if sz, err := labs.ParseSize(t); err == nil {
		return quantity{float64(sz), dimBytes}, nil
	}
	if d, err := labs.ParseDuration(t); err == nil {
		return quantity{d.D().Seconds(), dimSeconds}, nil
	}
	return quantity{}, fmt.Errorf("%q is not a number, a size (64Mi) or a duration (10s)", s)
}

func parseFloat(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	return f, nil
}

// numberMatches compares answer with want within tolerance ("" exact,
// "5%" relative to want, otherwise an absolute quantity). A plain number
// takes the dimension of the other side (67108864 answers 64Mi); two
// different units never match.
func numberMatches(want, tolerance, answer string) (bool, error) {
	w, err := parseQuantity(want)
	if err != nil {
		return false, fmt.Errorf("expected value: %w", err)
	}
	var tol float64
	if tolerance != "" {
		tq, err := parseQuantity(tolerance)
		if err != nil {
			return false, fmt.Errorf("tolerance: %w", err)
		}
		switch {
		case tq.dim == dimPercent && w.dim != dimPercent:
			tol = math.Abs(w.value) * tq.value / 100
		case tq.dim == dimPlain || tq.dim == w.dim || w.dim == dimPlain:
			tol = tq.value
		default:
			return false, fmt.Errorf("tolerance %s is a %s but the value is a %s", tolerance, tq.dim, w.dim)
		}
	}
	a, err := parseQuantity(answer)
	if err != nil {
		return false, nil
	}
	if a.dim != w.dim && a.dim != dimPlain && w.dim != dimPlain {
		return false, nil
	}
	// A tiny epsilon so 0.0625Gi and 64Mi, computed through floats, agree.
	eps := 1e-9 * math.Max(1, math.Abs(w.value))
	return math.Abs(a.value-w.value) <= tol+eps, nil
}
