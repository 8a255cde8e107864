// Stop strings over streamed text.
//
// Generated text arrives in pieces as it is detokenized. StopMatcher passes on ("emits") every
// byte that can no longer belong to a stop string, holds back the longest suffix that is a proper
// prefix of some stop string, and when a stop string is complete it emits the text before it and
// reports `stopped`; the stop string itself and anything after it are dropped (OpenAI semantics).
//
// Which stop wins: the occurrence that ends first in the text, and among those ending at the same
// byte the one starting first. This is what a token-by-token stream sees, and it makes the result
// independent of how the text is split into pushes.
//
// Matching is on bytes. In addition, an incomplete UTF-8 sequence at the very end of the pending
// text (a lead byte without all its continuation bytes yet) is held back, so emitted pieces never
// split a character even when a token ends mid-character. flush() returns whatever is held.
//
// Empty stop strings are ignored. After a stop, push() returns {"", true} and flush() "".
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace whale {

class StopMatcher {
 public:
  struct Result {
    std::string emit;  // text safe to show now
    bool stopped;      // a stop string was found; generation should end
  };

  explicit StopMatcher(std::vector<std::string> stops);

  Result push(std::string_view text);
  // End of generation without a stop: returns the held-back text and clears it.
  std::string flush();
  // Forgets pending text and the stopped state, for a new generation with the same stops.
  void reset();

  bool stopped() const { return stopped_; }
  // The stop string that ended generation ("" while not stopped).
  const std::string& matched() const { return matched_; }
  // Bytes currently held back.
  size_t pending() const { return pending_.size(); }

 private:
  // Start of the earliest-ending stop occurrence in pending_, or npos.
  size_t find_stop() const;
  // Length of the longest suffix of pending_ that is a proper prefix of some stop string.
  size_t partial_suffix() const;

  std::vector<std::string> stops_;
  std::string pending_;
  std::string matched_;
  bool stopped_ = false;
};

}  // namespace whale
