"""Online teacher-student training (issue 17): Unbiased Teacher's recipe with a
selector of the registry as the teacher's image filter.

* :mod:`.ema`     - the EMA update of the teacher and the keep rate's scaling;
* :mod:`.views`   - the strong view (photometric only, seeded by seed and iteration);
* :mod:`.targets` - the teacher's boxes above ``TEACHER.SCORE_THRESH`` as the student's
  targets, and the unsupervised loss (exactly 0 without a box);
* :mod:`.trainer` - ``TeacherTrainer`` (the project's ``Trainer`` with a teacher-student
  step, the pool filter, checkpoints of teacher + student, the exported teacher).

Imports Detectron2 (like ``engine``); ``import imagescore_det.teacher`` stays light, the
trainer is imported from ``imagescore_det.teacher.trainer``.
"""
