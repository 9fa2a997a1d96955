// What the coordinating stores share (storage/detail/shared_store.hpp): server
// text made safe for a message.
#include <doctest/doctest.h>

#include <tokmgr/storage/detail/shared_store.hpp>

#include <string>

using tokmgr::detail::safe_server_text;

TEST_CASE("safe_server_text: the password never shows, not cut at the length limit, not split by a control byte") {
    const std::string password = "correct-horse-battery";
    CHECK(safe_server_text("WRONGPASS for " + password + " said the proxy", password) ==
          "WRONGPASS for (redacted) said the proxy");
    // Straddling the 160-byte cut: taken out before the cut, so no prefix of it remains.
    const std::string padded = std::string(150, 'a') + password;
    const std::string straddling = safe_server_text(padded, password);
    CHECK(straddling.find("correct") == std::string::npos);
    CHECK(straddling.size() <= 160);
    // A password holding a control byte is still found in the raw text.
    const std::string with_tab = "pass\tword-with-tab";
    CHECK(safe_server_text("said " + with_tab + " back", with_tab) == "said (redacted) back");
    // A password that "(redacted)" itself contains: replaced once, no endless loop.
    CHECK(safe_server_text("x dact y", "dact") == "x (redacted) y");
    // Short passwords cannot be replaced safely: the whole text goes.
    CHECK(safe_server_text("abc said", "abc").find("abc") == std::string::npos);
    // Control characters become spaces; the length is bounded.
    CHECK(safe_server_text("a\r\nb", "") == "a  b");
    CHECK(safe_server_text(std::string(500, 'z'), "").size() == 160);
}
