// A task's part of the C++ runtime, the twin of mp_deploy/tasks/<task>.py: what its raw output holds, how it
// becomes a Result, and which files mp_infer writes for it. One file per task (task_depth.cpp, task_seg.cpp,
// task_pose.cpp); find_task() knows them by the sidecar's task name. Adding a task: a task_<name>.cpp with a
// Task subclass and a line in find_task (task.cpp).
#pragma once

#include <string>
#include <vector>

#include "mp_deploy/engine.h"
#include "mp_deploy/image.h"

namespace mp {

class Task {
 public:
  virtual ~Task() = default;
  // Channels of the raw output (B, C, h, w), from the verified contract.
  virtual int64_t channels(const Sidecar& s) const = 0;
  // Batch item 0 of the raw output, (c, h, w) for a net_h x net_w network input -> r's task fields at the
  // image's size (r->width x r->height).
  virtual void postprocess(const float* first, int c, int h, int w, int net_h, int net_w, Result* r) const = 0;
  // mp::Error for outputs this task cannot write, before anything runs.
  virtual void check(const OutputPaths&) const {}
  // mp_infer's task files (--output, --raw), appended to `files` (committed all together by the caller).
  virtual void write(const Result& r, const Image& image, const Sidecar& s, const OutputPaths& paths,
                     std::vector<OutputFile>* files) const = 0;
};

// The task of a sidecar (mp::Error for a name no task file knows).
const Task& find_task(const std::string& name);

}  // namespace mp
