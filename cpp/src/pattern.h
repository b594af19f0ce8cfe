// The schema's string patterns, matched against the whole string as Python's re.fullmatch does.
#pragma once

#include <string>

namespace mp {

// A pattern is a sequence of atoms ([class] with ranges, \escaped punctuation, or a literal ASCII
// character), each optionally followed by *, +, ? or {n} / {n,m}. Matching is linear in the text (no
// backtracking, no recursion: std::regex can overflow the stack on a long string). A pattern using other
// syntax is an mp::Error, so the C++ side never silently accepts what Python would refuse.
bool pattern_match(const std::string& pattern, const std::string& text);

}  // namespace mp
