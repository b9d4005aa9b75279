// The diagnose table: every line fits 80 columns, and a reason is wrapped, never cut.
#include "cli/report.h"

#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace kidreaper {
namespace {

TEST(RenderTable, LongReasonsWrapWithinEightyColumns) {
    Diagnosis diagnosis;
    ChildDiagnosis child;
    child.pid = 4194303;
    child.classification.verdict = Verdict::cow;
    child.classification.reason =
        "no fresh memory kept over 0.085 s of work; unshared 95 MiB (9.5 MiB/s): normal COW, "
        "and a tail long enough to need a third line of text in the table";
    diagnosis.children.push_back(child);
    const std::string table = render_table(diagnosis);
    std::istringstream lines(table);
    std::string line;
    std::string reason;
    while (std::getline(lines, line)) {
        EXPECT_LE(line.size(), 80u) << line;
        EXPECT_EQ(line.find("..."), std::string::npos) << "cut: " << line;
        if (line.rfind("  4194303: ", 0) == 0) {
            reason = line.substr(11);
        } else if (!reason.empty() && line.rfind("           ", 0) == 0 &&
                   line.find_first_not_of(' ') == 11) {
            reason += " " + line.substr(11);
        }
    }
    EXPECT_EQ(reason, child.classification.reason);
}

}  // namespace
}  // namespace kidreaper
