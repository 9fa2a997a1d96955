#include <tokmgr/secret.hpp>

#include <doctest/doctest.h>

#include <sstream>
#include <string>

TEST_CASE("a secret streams as a placeholder and is read only through reveal") {
    const tokmgr::secret s("hunter2-password");
    std::ostringstream out;
    out << s << ' ' << s.view();
    CHECK(out.str() == "[redacted] [redacted]");
    CHECK(s.reveal() == "hunter2-password");
    CHECK(s.size() == 16);
}

TEST_CASE("a moved-from secret is empty") {
    tokmgr::secret a("value-one");
    tokmgr::secret b(std::move(a));
    CHECK(a.empty());  // NOLINT(bugprone-use-after-move): the wipe is the point
    CHECK(b.reveal() == "value-one");
    tokmgr::secret c;
    c = std::move(b);
    CHECK(b.empty());  // NOLINT(bugprone-use-after-move)
    CHECK(c.reveal() == "value-one");
}

TEST_CASE("secure_wipe zeroes the bytes and secure_clear empties the string") {
    std::string text = "sensitive";
    char* data = &text[0];
    const auto capacity = text.capacity();
    tokmgr::detail::secure_clear(text);
    CHECK(text.empty());
    CHECK(text.capacity() == capacity);  // same buffer, now zeroed
    for (std::size_t i = 0; i < 9; ++i) CHECK(data[i] == '\0');
}

TEST_CASE("reserve_wiping keeps the characters and grows at least twofold") {
    std::string text = "sensitive";
    text.shrink_to_fit();
    const auto capacity = text.capacity();
    tokmgr::detail::reserve_wiping(text, capacity + 1);
    CHECK(text == "sensitive");
    CHECK(text.capacity() >= 2 * capacity);
    const auto grown = text.capacity();
    tokmgr::detail::reserve_wiping(text, 1);  // never shrinks
    CHECK(text.capacity() == grown);
}

TEST_CASE("secret comparison is by content") {
    CHECK(tokmgr::secret("abc") == tokmgr::secret("abc"));
    CHECK(tokmgr::secret("abc") != tokmgr::secret("abd"));
    CHECK(tokmgr::secret("abc") != tokmgr::secret("abcd"));
    CHECK(tokmgr::secret_view("x") == tokmgr::secret("x").view());
}
