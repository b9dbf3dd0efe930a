"""Thread choices: the operator's cap holds for an engine however many processes train it together."""

import os
import unittest

import torch

from tunelab_engine import runtime


class UseThreads(unittest.TestCase):
    def setUp(self):
        self.threads = torch.get_num_threads()
        self.cap = os.environ.pop("TUNELAB_THREADS", None)

    def tearDown(self):
        torch.set_num_threads(self.threads)
        os.environ.pop("TUNELAB_THREADS", None)
        if self.cap is not None:
            os.environ["TUNELAB_THREADS"] = self.cap

    def test_the_operators_cap_is_divided_among_processes_training_together(self):
        os.environ["TUNELAB_THREADS"] = "4"
        runtime.use_threads(share=2)
        self.assertEqual(torch.get_num_threads(), 2)
        runtime.use_threads()
        self.assertEqual(torch.get_num_threads(), 4)

    def test_every_process_keeps_at_least_one_thread(self):
        os.environ["TUNELAB_THREADS"] = "1"
        runtime.use_threads(share=4)
        self.assertEqual(torch.get_num_threads(), 1)

    def test_a_count_the_spec_names_is_taken_as_it_is(self):
        os.environ["TUNELAB_THREADS"] = "4"
        runtime.use_threads(3, share=2)
        self.assertEqual(torch.get_num_threads(), 3)

    def test_a_cap_that_is_not_a_whole_number_is_refused_by_name(self):
        os.environ["TUNELAB_THREADS"] = "two"
        with self.assertRaises(SystemExit) as refused:
            runtime.use_threads()
        self.assertIn("TUNELAB_THREADS='two'", str(refused.exception))


if __name__ == "__main__":
    unittest.main()
