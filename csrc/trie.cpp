// Vocabulary trie construction and per-batch node selection (see trie.h).
#include "trie.h"

#include <algorithm>
#include <memory>
#include <numeric>
#include <utility>

namespace charfast {

std::string shape_of(const at::Tensor& tensor) {
  std::string shape = "[";
  for (int64_t d = 0; d < tensor.dim(); ++d) shape += (d ? ", " : "") + text(tensor.size(d));
  return shape + "]";
}

std::tuple<at::Tensor, at::Tensor> build_vocab_trie(const at::Tensor& chars, const at::Tensor& lengths,
                                                    int64_t n_chars) {
  TORCH_CHECK(chars.dim() == 2 && !chars.is_floating_point() && !chars.is_complex() && chars.device().is_cpu(),
              "charfast::build_vocab_trie: chars must be a 2-D integer CPU tensor [vocab, max_len], got ",
              chars.scalar_type(), " of shape ", shape_of(chars), " on ", chars.device());
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == chars.size(0) && !lengths.is_floating_point() &&
                  lengths.device().is_cpu(),
              "charfast::build_vocab_trie: lengths must be a 1-D integer CPU tensor with one entry per token (",
              text(chars.size(0)), "), got ", lengths.scalar_type(), " of shape ", shape_of(lengths));
  TORCH_CHECK(n_chars >= 1 && n_chars <= (int64_t{1} << 31),
              "charfast::build_vocab_trie: n_chars must lie in [1, 2^31], got ", text(n_chars));
  const int64_t vocab = chars.size(0), max_len = chars.size(1);
  const at::Tensor lengths64 = lengths.to(at::kLong).contiguous();
  const int64_t* len = lengths64.data_ptr<int64_t>();
  for (int64_t v = 0; v < vocab; ++v) {
    TORCH_CHECK(len[v] >= 0 && len[v] <= max_len, "charfast::build_vocab_trie: lengths must lie in [0, ",
                text(max_len), "]; token ", text(v), " has length ", text(len[v]));
  }
  const at::Tensor chars64 = chars.to(at::kLong).contiguous();  // [V, L]; transient, freed on return
  const int64_t* ch = chars64.data_ptr<int64_t>();

  // Tokens by length, longest first: the tokens that reach depth d+1 are a prefix of `order`.
  std::vector<int64_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return len[a] > len[b]; });

  std::vector<int64_t> node_of(vocab, -1);  // node of each token's prefix read so far
  std::vector<int32_t> parent, node_char, depth;
  std::vector<std::pair<int64_t, int64_t>> keyed;  // (key of (parent, char), token)
  int64_t active = vocab;
  for (int64_t d = 0; d < max_len; ++d) {
    while (active > 0 && len[order[active - 1]] <= d) --active;
    if (active == 0) break;
    keyed.clear();
    for (int64_t a = 0; a < active; ++a) {
      const int64_t v = order[a], c = ch[v * max_len + d];
      TORCH_CHECK(c >= 0 && c < n_chars, "charfast::build_vocab_trie: char ids must lie in [0, ", text(n_chars),
                  "); token ", text(v), " has ", text(c), " at position ", text(d));
      keyed.emplace_back((node_of[v] + 1) * n_chars + c, v);  // +1: the root (-1) sorts first
    }
    std::sort(keyed.begin(), keyed.end());
    int64_t previous_key = -1;
    for (const auto& [key, v] : keyed) {
      if (key != previous_key) {
        parent.push_back(static_cast<int32_t>(node_of[v]));
        node_char.push_back(static_cast<int32_t>(key % n_chars));
        depth.push_back(static_cast<int32_t>(d + 1));
        previous_key = key;
      }
      node_of[v] = static_cast<int64_t>(parent.size()) - 1;
    }
  }
  const int64_t n_nodes = static_cast<int64_t>(parent.size());
  TORCH_CHECK(n_nodes < (int64_t{1} << 31), "charfast::build_vocab_trie: the trie has too many nodes for int32");
  at::Tensor trie_nodes = at::empty({n_nodes, 3}, at::kInt);  // [N, 3]
  int32_t* out = trie_nodes.data_ptr<int32_t>();
  for (int64_t i = 0; i < n_nodes; ++i) {
    out[3 * i + kTrieParent] = parent[i];
    out[3 * i + kTrieChar] = node_char[i];
    out[3 * i + kTrieDepth] = depth[i];
  }
  at::Tensor token_node = at::empty({vocab}, at::kInt);  // [V]
  std::copy(node_of.begin(), node_of.end(), token_node.data_ptr<int32_t>());
  return {trie_nodes, token_node};
}

BatchTrie select_batch_trie(const at::Tensor& trie_nodes, const at::Tensor& token_node, const at::Tensor& ids,
                            int64_t n_chars, const char* op) {
  TORCH_CHECK(trie_nodes.dim() == 2 && trie_nodes.size(1) == 3 && trie_nodes.scalar_type() == at::kInt &&
                  trie_nodes.device().is_cpu(),
              op, ": trie_nodes must be the int32 CPU tensor [N, 3] from charfast::build_vocab_trie, got ",
              trie_nodes.scalar_type(), " of shape ", shape_of(trie_nodes), " on ", trie_nodes.device());
  TORCH_CHECK(token_node.dim() == 1 && token_node.scalar_type() == at::kInt && token_node.device().is_cpu(),
              op, ": token_node must be the int32 CPU tensor [V] from charfast::build_vocab_trie, got ",
              token_node.scalar_type(), " of shape ", shape_of(token_node), " on ", token_node.device());
  TORCH_CHECK(ids.dim() == 1 && ids.scalar_type() == at::kLong && ids.device().is_cpu(), op,
              ": ids must be a 1-D int64 CPU tensor of token ids, got ", ids.scalar_type(), " of shape ",
              shape_of(ids), " on ", ids.device());
  const at::Tensor nodes_c = trie_nodes.contiguous(), token_node_c = token_node.contiguous(), ids_c = ids.contiguous();
  const int32_t* node = nodes_c.data_ptr<int32_t>();
  const int32_t* token_to_node = token_node_c.data_ptr<int32_t>();
  const int64_t* id = ids_c.data_ptr<int64_t>();
  const int64_t n_vocab_nodes = trie_nodes.size(0), vocab = token_node.size(0), n_ids = ids.size(0);
  for (int64_t u = 0; u < n_ids; ++u) {
    TORCH_CHECK(id[u] >= 0 && id[u] < vocab, op, ": ids must lie in [0, ", text(vocab), ") (the table's vocabulary); ids[",
                text(u), "] = ", text(id[u]));
  }

  // Terminal nodes and all their ancestors; a walk stops at the first node already taken.
  std::vector<uint8_t> taken(n_vocab_nodes, 0);
  std::vector<int64_t> selected;  // vocabulary node ids
  for (int64_t u = 0; u < n_ids; ++u) {
    for (int64_t v = token_to_node[id[u]]; v >= 0 && !taken[v]; v = node[3 * v + kTrieParent]) {
      TORCH_CHECK(v < n_vocab_nodes, op, ": token_node/trie_nodes are inconsistent (node ", text(v), " of ", text(n_vocab_nodes),
                  ")");
      taken[v] = 1;
      selected.push_back(v);
    }
  }
  std::sort(selected.begin(), selected.end());  // vocabulary order: by level, siblings together

  BatchTrie trie;
  const int64_t n = static_cast<int64_t>(selected.size());
  trie.n_nodes = n;
  // Vocabulary node -> batch index; only entries of selected nodes are ever written or read.
  std::unique_ptr<int64_t[]> batch_index(new int64_t[std::max<int64_t>(n_vocab_nodes, 1)]);
  for (int64_t k = 0; k < n; ++k) batch_index[selected[k]] = k;
  trie.parent.resize(n);
  trie.chars.resize(n);
  trie.level_begin.push_back(0);
  std::vector<uint8_t> has_child(n, 0);
  for (int64_t k = 0; k < n; ++k) {
    const int32_t* row = node + 3 * selected[k];
    TORCH_CHECK(row[kTrieChar] >= 0 && row[kTrieChar] < n_chars, op, ": trie node ", text(selected[k]), " reads char ",
                text(row[kTrieChar]), " but the gate table has ", text(n_chars), " rows (was the trie built for another table?)");
    trie.parent[k] = row[kTrieParent] < 0 ? -1 : batch_index[row[kTrieParent]];
    trie.chars[k] = row[kTrieChar];
    if (trie.parent[k] >= 0) has_child[trie.parent[k]] = 1;
    // Levels are contiguous in node order and, with all ancestors selected, none is empty.
    if (k > 0 && row[kTrieDepth] != node[3 * selected[k - 1] + kTrieDepth]) trie.level_begin.push_back(k);
  }
  if (n > 0) trie.level_begin.push_back(n);

  trie.internal_rank.assign(n, -1);
  trie.internal_level_begin.assign(trie.level_begin.size(), 0);
  for (int64_t d = 0; d < trie.depth(); ++d) {
    trie.internal_level_begin[d] = trie.n_internal();
    for (int64_t k = trie.level_begin[d]; k < trie.level_begin[d + 1]; ++k) {
      if (!has_child[k]) continue;
      trie.internal_rank[k] = trie.n_internal();
      trie.internal.push_back(k);
    }
  }
  trie.internal_level_begin.back() = trie.n_internal();
  trie.child_begin.assign(trie.n_internal(), 0);
  trie.child_end.assign(trie.n_internal(), 0);
  for (int64_t k = n - 1; k >= 0 && trie.parent[k] >= 0; --k) {  // parents are non-decreasing in node order
    const int64_t r = trie.internal_rank[trie.parent[k]];
    if (trie.child_end[r] == 0) trie.child_end[r] = k + 1;
    trie.child_begin[r] = k;
  }
  trie.terminal.resize(n_ids);
  for (int64_t u = 0; u < n_ids; ++u) {
    const int64_t v = token_to_node[id[u]];
    trie.terminal[u] = v < 0 ? -1 : batch_index[v];
  }
  return trie;
}

}  // namespace charfast
