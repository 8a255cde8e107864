# Writes the file IN into OUT as `extern const std::string_view whale::serve::kChatPage`.
# The bytes go out as hex so any content (quotes, backslashes, non-ASCII) survives.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," body "${hex}")
string(REGEX REPLACE "((('\\\\x[0-9a-f][0-9a-f]',){16}))" "\\1\n" body "${body}")
file(WRITE ${OUT} "// Generated from src/serve/page/index.html by cmake/embed.cmake. Do not edit.\n"
  "#include <string_view>\nnamespace whale::serve {\nnamespace {\n"
  "const char kBytes[] = {${body} 0};\n}\n"
  "extern const std::string_view kChatPage;\n"
  "const std::string_view kChatPage(kBytes, ${bytes});\n}\n")
