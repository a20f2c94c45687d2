// A card for any object: a @refetchable fragment on the Node interface.
import { graphql } from "relay-runtime";

export const fragment = graphql`
  fragment NodeCard_node on Node @refetchable(queryName: "NodeCardRefetchQuery") {
    id
    __typename
    ... on SyncedRecord {
      updatedAt
    }
    ... on Customer {
      displayName
    }
    ... on ExternalSource {
      name
    }
    ... on ImportBatch {
      status
      createdAt
    }
    ... on CredentialAccess {
      revealedAt
      userEmail
    }
  }
`;

export const query = graphql`
  query NodeCardQuery($id: ID!) {
    node(id: $id) {
      ...NodeCard_node
    }
  }
`;
