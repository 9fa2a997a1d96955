// fuzz_replay_test: every fuzz target over its seed corpus and the inputs
// fuzzing found (tests/fuzz/corpus/<target>/), in the normal test suite, so
// the properties are checked under every compiler and sanitizer it uses. A
// failed property aborts, which fails the test with the target and file.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <vector>

#include "fuzz_target.hpp"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: fuzz_replay_test CORPUS_DIR (tests/fuzz/corpus)\n";
        return 2;
    }
    namespace fs = std::filesystem;
    const fs::path root = argv[1];
    std::size_t inputs = 0;
    for (const auto& [name, target] : tokmgr_fuzz::targets()) {
        const fs::path dir = root / name;
        if (!fs::is_directory(dir)) {
            std::cerr << "fuzz target " << name << " has no seed corpus in " << dir << "\n";
            return 1;
        }
        std::vector<fs::path> files;
        for (const auto& entry : fs::directory_iterator(dir))
            if (entry.is_regular_file()) files.push_back(entry.path());
        if (files.empty()) {
            std::cerr << "fuzz target " << name << ": the seed corpus " << dir << " is empty\n";
            return 1;
        }
        for (const auto& file : files) {
            std::ifstream in(file, std::ios::binary);
            const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
            std::cerr << name << ": " << file.filename().string() << "\n";
            target(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
            ++inputs;
        }
    }
    std::cout << tokmgr_fuzz::targets().size() << " fuzz targets replayed " << inputs << " inputs\n";
    return 0;
}
