// failing_new.hpp — operator new that fails the n-th allocation of a thread
// when told to (never otherwise), and counts allocations when asked: fault
// injection by count for a test binary. Include it in exactly one file of
// that binary (it replaces the global operators).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace {

// Trivial thread_locals: readable from operator new at any time.
thread_local std::size_t allocations_until_failure = 0;  // 0: never fail
thread_local std::size_t allocations_seen = 0;
thread_local bool counting_allocations = false;  // while true, allocations_counted counts
thread_local std::size_t allocations_counted = 0;

/// Fails the n-th allocation of this thread from now on (n >= 1).
void fail_allocation(std::size_t n) {
    allocations_seen = 0;
    allocations_until_failure = n;
}

/// Stops failing; true when the failure happened.
bool stop_failing() {
    const bool failed = allocations_until_failure == 0 || allocations_seen >= allocations_until_failure;
    allocations_until_failure = 0;
    return failed;
}

}  // namespace

void* operator new(std::size_t size) {
    if (counting_allocations) ++allocations_counted;
    if (allocations_until_failure != 0 && ++allocations_seen == allocations_until_failure) throw std::bad_alloc();
    if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
// The nothrow forms too (simdjson uses new[](nothrow)): every unaligned form
// allocates with malloc here, so every unaligned delete may free. The aligned
// forms stay the runtime's, new and delete alike.
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
    try {
        return operator new(size);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept { return operator new(size, tag); }
// GCC pairs the operator new[] it sees with free here and warns; these are
// the replacements themselves, where that pairing is the point.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
