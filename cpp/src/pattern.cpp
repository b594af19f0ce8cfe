#include "pattern.h"

#include <bitset>
#include <cctype>
#include <cstring>
#include <vector>

#include "mp_deploy/engine.h"

namespace mp {
namespace {

struct Atom {
  std::bitset<256> chars;
  bool optional = false;  // may be skipped (from ? and {n,m})
  bool repeat = false;    // zero or more (from * and +)
};

const size_t kUnbounded = size_t(-1);

[[noreturn]] void unsupported(const std::string& pattern, const std::string& why) {
  throw Error("schema pattern '" + pattern + "' " + why + ": the C++ validator knows [classes], \\escapes, "
              "literals, *, +, ?, {n} and {n,m}");
}

// One character of a class or an atom: a literal or an escaped punctuation character.
unsigned char class_char(const std::string& p, size_t* i) {
  unsigned char c = p[(*i)++];
  if (c != '\\') return c;
  if (*i >= p.size() || std::isalnum(static_cast<unsigned char>(p[*i])))
    unsupported(p, "has an escape other than \\ + punctuation");
  return p[(*i)++];
}

size_t read_count(const std::string& p, size_t* i) {
  size_t n = 0, start = *i;
  while (*i < p.size() && std::isdigit(static_cast<unsigned char>(p[*i])) && n < 100000) n = n * 10 + (p[(*i)++] - '0');
  if (*i == start) unsupported(p, "has a {} without a count");
  return n;
}

std::vector<Atom> compile(const std::string& p) {
  std::vector<Atom> atoms;
  size_t i = 0;
  while (i < p.size()) {
    Atom atom;
    char c = p[i];
    if (c == '[') {
      ++i;
      if (i < p.size() && p[i] == '^') unsupported(p, "has a negated class");
      for (bool first = true; i >= p.size() || p[i] != ']' || first; first = false) {
        if (i >= p.size()) unsupported(p, "has an unclosed [");
        unsigned char lo = class_char(p, &i), hi = lo;
        if (i + 1 < p.size() && p[i] == '-' && p[i + 1] != ']') {
          ++i;
          hi = class_char(p, &i);
          if (hi < lo) unsupported(p, "has a reversed range");
        }
        for (unsigned v = lo; v <= hi; ++v) atom.chars.set(v);
      }
      ++i;  // ]
    } else if (std::strchr(".()|^$*+?{}]", c)) {
      unsupported(p, std::string("uses '") + c + "' outside a class");
    } else {
      atom.chars.set(class_char(p, &i));
    }
    size_t lo = 1, hi = 1;  // repetitions
    if (i < p.size() && (p[i] == '*' || p[i] == '+' || p[i] == '?')) {
      lo = p[i] == '+' ? 1 : 0;
      hi = p[i] == '?' ? 1 : kUnbounded;
      ++i;
    } else if (i < p.size() && p[i] == '{') {
      ++i;
      lo = hi = read_count(p, &i);
      if (i < p.size() && p[i] == ',') {
        ++i;
        hi = read_count(p, &i);
      }
      if (i >= p.size() || p[i++] != '}' || hi < lo || hi > 4096) unsupported(p, "has a bad {n,m}");
    }
    for (size_t k = 0; k < lo; ++k) atoms.push_back(atom);
    atom.repeat = hi == kUnbounded;
    atom.optional = !atom.repeat;
    if (atom.repeat) atoms.push_back(atom);
    else
      for (size_t k = lo; k < hi; ++k) atoms.push_back(atom);
  }
  return atoms;
}

// Positions k that can be reached without a character are added (skippable atoms lead to k + 1).
void close_over_skips(const std::vector<Atom>& atoms, std::vector<char>& states) {
  for (size_t k = 0; k < atoms.size(); ++k)
    if (states[k] && (atoms[k].optional || atoms[k].repeat)) states[k + 1] = 1;
}

}  // namespace

bool pattern_match(const std::string& pattern, const std::string& text) {
  std::vector<Atom> atoms = compile(pattern);
  size_t n = atoms.size();
  std::vector<char> now(n + 1, 0), next(n + 1, 0);  // the set of positions in the pattern
  now[0] = 1;
  close_over_skips(atoms, now);
  for (unsigned char c : text) {
    std::fill(next.begin(), next.end(), 0);
    bool alive = false;
    for (size_t k = 0; k < n; ++k)
      if (now[k] && atoms[k].chars[c]) {
        next[atoms[k].repeat ? k : k + 1] = 1;
        alive = true;
      }
    if (!alive) return false;
    close_over_skips(atoms, next);
    now.swap(next);
  }
  return now[n];
}

}  // namespace mp
