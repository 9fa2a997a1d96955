// tokmgr/storage/detail/storage_errors.hpp — what every shipped store shares:
// its last failure as an error_info, and the throwing overloads that carry it.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "../../errc.hpp"
#include "../../error.hpp"
#include "../../token_set.hpp"

namespace tokmgr::detail {

/// CRTP base of a store whose error_code calls record `last_error_`. A
/// derived class names these overloads with `using` (its own error_code
/// overloads hide them otherwise).
template <class Store>
class storage_errors {
public:
    /// What the last failure was, where, and what to do. Never a secret.
    const error_info& last_error() const noexcept { return last_error_; }

    // Throwing overloads: tokmgr::error carrying last_error().
    std::optional<token_set> load() { return or_throw(self().load(scratch_)); }
    void store(const token_set& set) {
        self().store(set, scratch_);
        or_throw(0);
    }
    auto lock(std::chrono::milliseconds max_wait) { return or_throw(self().lock(max_wait, scratch_)); }
    template <class Lease>
    bool holds(const Lease& held) {
        return or_throw(self().holds(held, scratch_));
    }
    bool store_if(const token_set& set, std::uint64_t expected_generation) {
        return or_throw(self().store_if(set, expected_generation, scratch_));
    }

protected:
    template <class T>
    T or_throw(T value) {
        if (scratch_) throw_error(last_error_);
        return value;
    }

    void clear_error(std::error_code& ec) {
        ec.clear();
        last_error_ = {};
    }

    void fail(std::error_code& ec, errc code, std::string detail) {
        ec = make_error_code(code);
        last_error_.code = ec;
        last_error_.detail = std::move(detail);
    }

    /// store_if's rule for a shared store (its options().where() names it):
    /// every write increases the generation; storage_failed otherwise.
    bool generation_increases(const token_set& set, std::uint64_t expected_generation, std::error_code& ec) {
        if (set.generation > expected_generation) return true;
        fail(ec, errc::storage_failed,
             "store_if on " + self().options().where() + ": the new generation " + std::to_string(set.generation) +
                 " is not above the expected " + std::to_string(expected_generation) +
                 "; every write must increase it");
        return false;
    }

    error_info last_error_;

private:
    Store& self() noexcept { return static_cast<Store&>(*this); }
    std::error_code scratch_;
};

}  // namespace tokmgr::detail
