// Prefix tries of token character strings, for the trie char-LSTM (char_lstm_trie.cpp).
//
// The LSTM state after a prefix is the same for every token that starts with it, so the
// LSTM runs once per trie node (one level per time step) instead of once per character
// of every token. The vocabulary's trie is built once per table; a batch then selects
// the nodes its ids need (their terminal nodes and all ancestors).
//
// Dimensions: V vocabulary tokens, L max token length, N vocabulary-trie nodes,
//             U ids in a batch, n batch-trie nodes, k internal batch nodes (>= 1 child).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace charfast {

// Numbers and shapes as text for error messages. On an H100 machine (torch 2.11, this
// library built by g++ 13.3) streaming an integer into TORCH_CHECK's message segfaulted
// inside std::ostream's number formatting (BENCHMARKS.md); text streams safely there.
inline std::string text(int64_t value) { return std::to_string(value); }
std::string shape_of(const at::Tensor& tensor);  // "[d0, d1, ...]"

// Columns of the vocabulary trie's node tensor [N, 3] int32.
constexpr int64_t kTrieParent = 0;  // parent node, -1 for depth-1 nodes (children of the root)
constexpr int64_t kTrieChar = 1;    // char id read at this node
constexpr int64_t kTrieDepth = 2;   // 1-based depth (= prefix length)

// (trie_nodes [N, 3] int32, token_node [V] int32): the trie of all tokens of a table
// (chars [V, L] any int dtype, lengths [V]). Nodes are numbered level by level and, in a
// level, by (parent, char), so the children of a node are contiguous and in parent order.
// token_node[v] is the node of token v's last char, -1 for a zero-length token.
std::tuple<at::Tensor, at::Tensor> build_vocab_trie(const at::Tensor& chars, const at::Tensor& lengths,
                                                    int64_t n_chars);

// The part of a vocabulary trie that one batch of ids needs, renumbered 0..n-1 in the
// vocabulary's order (so by level, and siblings contiguous in parent order).
struct BatchTrie {
  int64_t n_nodes = 0;
  std::vector<int64_t> parent;          // [n] batch index of the parent, -1 at depth 1
  std::vector<int64_t> chars;           // [n] char id of each node
  std::vector<int64_t> level_begin;     // [D+1] depth d+1 holds nodes [level_begin[d], level_begin[d+1])
  std::vector<int64_t> internal;        // [k] nodes with >= 1 child, in node order
  std::vector<int64_t> internal_rank;   // [n] position in `internal`, -1 for a leaf
  std::vector<int64_t> internal_level_begin;  // [D+1] the same level split for `internal`
  std::vector<int64_t> child_begin;     // [k] children of internal[r] are nodes
  std::vector<int64_t> child_end;       // [k]   [child_begin[r], child_end[r])
  std::vector<int64_t> terminal;        // [U] node of each id's last char, -1 for a zero-length token

  int64_t depth() const { return static_cast<int64_t>(level_begin.size()) - 1; }
  int64_t n_internal() const { return static_cast<int64_t>(internal.size()); }
};

// Checks the trie tensors' form and every id (1-D int64, in [0, V)), then selects the batch
// trie. `op` names the calling op in error messages; `n_chars` bounds the selected nodes' chars.
BatchTrie select_batch_trie(const at::Tensor& trie_nodes, const at::Tensor& token_node, const at::Tensor& ids,
                            int64_t n_chars, const char* op);

}  // namespace charfast
