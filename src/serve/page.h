// The chat page served at GET / : src/serve/page/index.html, compiled in by cmake/embed.cmake.
#pragma once

#include <string_view>

namespace whale::serve {
extern const std::string_view kChatPage;
}
