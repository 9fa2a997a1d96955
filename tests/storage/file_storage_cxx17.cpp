// file_storage as C++17 sees it: the header compiles at the library's
// baseline standard, and the lease keeps its move-only contract there.
#include <tokmgr/storage/file.hpp>

#include <type_traits>

#if __cplusplus >= 202002L
#error "this translation unit exists to compile file.hpp as C++17"
#endif

static_assert(std::is_nothrow_move_constructible_v<tokmgr::file_storage::lease>);
static_assert(!std::is_copy_constructible_v<tokmgr::file_storage::lease>);
static_assert(!std::is_convertible_v<tokmgr::file_storage::lease, bool>, "operator bool is explicit");
