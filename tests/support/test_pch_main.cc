// The target that owns the tests' precompiled header (tests/CMakeLists.txt,
// LABSHARE_TEST_PCH); every labshare_test reuses it.
namespace labshare::testing_pch {
int Anchor() { return 0; }
}  // namespace labshare::testing_pch
