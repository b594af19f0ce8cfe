#include "task.h"

namespace mp {

const Task& depth_task();
const Task& seg_task();
const Task& pose_task();

const Task& find_task(const std::string& name) {
  if (name == "depth") return depth_task();
  if (name == "seg") return seg_task();
  if (name == "pose") return pose_task();
  throw Error("task '" + name + "' has no C++ runtime");
}

void check_outputs(const Sidecar& s, const OutputPaths& paths) { find_task(s.task).check(paths); }

void write_outputs(const Result& r, const Image& image, const Sidecar& s, const OutputPaths& paths,
                   std::vector<OutputFile>* files) {
  if (!paths.npy.empty()) {
    files->emplace_back(paths.npy);
    write_npy(files->back().file(), r.raw.shape, r.raw.data);
  }
  find_task(s.task).write(r, image, s, paths, files);
}

}  // namespace mp
