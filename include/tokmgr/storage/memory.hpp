// tokmgr/storage/memory.hpp — the default Storage policy: the token set lives
// as long as the manager and no longer.
#pragma once

#include <optional>
#include <system_error>

#include "../token_set.hpp"

namespace tokmgr {

class memory_storage {
public:
    std::optional<token_set> load(std::error_code& ec) const {
        ec.clear();
        return stored_;
    }

    void store(const token_set& set, std::error_code& ec) {
        ec.clear();
        stored_ = set;
    }

private:
    std::optional<token_set> stored_;
};

}  // namespace tokmgr
