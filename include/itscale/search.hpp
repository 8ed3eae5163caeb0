#pragma once
/// \file search.hpp
/// The whole library: `#include <itscale/search.hpp>` (all but itscale/testing/, which needs
/// doctest).

#include "itscale/version.hpp"

#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/logit_source_archetype.hpp"
#include "itscale/core/rng.hpp"
#include "itscale/core/scoring.hpp"
#include "itscale/core/types.hpp"

#include "itscale/kernels/beam_select.hpp"
#include "itscale/kernels/filters.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/sample.hpp"
#include "itscale/kernels/softmax.hpp"
#include "itscale/kernels/top_k.hpp"

#include "itscale/backends/cfg_source.hpp"
#include "itscale/backends/contrastive_source.hpp"
#include "itscale/backends/ensemble_source.hpp"
#include "itscale/backends/function_source.hpp"
#include "itscale/backends/hash_lm.hpp"

#include "itscale/backends/llama2c_checkpoint.hpp"
#include "itscale/backends/llama2c_model.hpp"
#include "itscale/backends/llama2c_tokenizer.hpp"
#include "itscale/backends/support/paged_kv_cache.hpp"

#include "itscale/processors/chain.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/processors/sampling_chain.hpp"
#include "itscale/processors/sampling_options.hpp"

#include "itscale/decode/generate.hpp"
#include "itscale/decode/generation.hpp"

#include "itscale/search/beam_hypotheses.hpp"
#include "itscale/search/beam_options.hpp"
#include "itscale/search/beam_search.hpp"
#include "itscale/search/beam_select.hpp"
#include "itscale/search/beam_stopping.hpp"
#include "itscale/search/diverse_beam_search.hpp"
#include "itscale/search/stochastic_beam_search.hpp"

#include "itscale/select/adaptive_consistency.hpp"
#include "itscale/select/best_of_n.hpp"
#include "itscale/select/consistency_result.hpp"
#include "itscale/select/mbr.hpp"
#include "itscale/select/mbr_utility.hpp"
#include "itscale/select/proposer_consistency.hpp"
#include "itscale/select/rescore.hpp"
#include "itscale/select/self_consistency.hpp"
#include "itscale/select/stop_criteria.hpp"
#include "itscale/select/vote.hpp"

#include "itscale/steps/best_first_search.hpp"
#include "itscale/steps/dvts.hpp"
#include "itscale/steps/handle_budget.hpp"
#include "itscale/steps/rebase.hpp"
#include "itscale/steps/sampling_proposer.hpp"
#include "itscale/steps/step_beam_search.hpp"
#include "itscale/steps/step_proposer.hpp"
#include "itscale/steps/step_search.hpp"
#include "itscale/steps/top_k_proposer.hpp"
#include "itscale/steps/verifier.hpp"

#include "itscale/tree/mcts.hpp"
#include "itscale/tree/mcts_node.hpp"
#include "itscale/tree/selection.hpp"
#include "itscale/tree/tree_export.hpp"
